//! Asymmetric interop through the binary, against an independent ed25519
//! implementation (PyNaCl, i.e. libsodium) driven by code written from the
//! specs' text (`tests/interop/py_interop.py`: `pynacl-v1a` follows the
//! Standard Webhooks spec, `pynacl-discord` Discord's docs):
//!
//! - `hookgate sign` with a `whsk_` key makes `v1a` signatures PyNaCl
//!   verifies with the public key it derives itself, and PyNaCl's pass
//!   `hookgate verify` with that `whpk_` key; the same for Discord with the
//!   hex public key;
//! - a header carrying `v1` and `v1a` (rotation across both) verifies in
//!   the `standardwebhooks` reference library (the `v1` entry) and in PyNaCl
//!   (the `v1a` one);
//! - one tampered byte of the body or of the signature fails on both sides.
//!
//! Without python3 it prints a skip message and passes, except under
//! `CI=true` where it fails.

#[path = "../../../tests/interop/harness.rs"]
mod harness;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use base64::Engine as _;
use harness::{answer_headers, Interop, Runtime};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_hookgate");
/// A 32-byte ed25519 seed, as Standard Webhooks serializes signing keys.
const SEED: [u8; 32] = *b"hookgate-ed25519-interop-seed-32";
const HMAC: &str = "whsec_aG9va2dhdGUtY2xpLWludGVyb3Atc2VjcmV0";

fn interop() -> Option<Interop> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    harness::setup(&root.canonicalize().expect("workspace root"))
}

fn whsk() -> String {
    format!(
        "whsk_{}",
        base64::engine::general_purpose::STANDARD.encode(SEED)
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_file(name: &str, bytes: &[u8]) -> TempFile {
    let path = std::env::temp_dir().join(format!(
        "hookgate-ed25519-interop-{}-{name}",
        std::process::id()
    ));
    std::fs::write(&path, bytes).unwrap();
    TempFile(path)
}

const BODY: &str = r#"{"id":"evt_ed25519","type":"contact.created","note":"héllo ✓"}"#;

fn sign(scheme: &str, secrets: &[&str], id: &str, body: &str) -> Value {
    let file = temp_file(&format!("sign-{scheme}-{}", secrets.len()), body.as_bytes());
    let mut cmd = Command::new(BIN);
    cmd.args(["sign", "--scheme", scheme, "--id", id]);
    for s in secrets {
        cmd.args(["--secret", s]);
    }
    let out = cmd
        .args(["--body-file", file.0.to_str().unwrap()])
        .args(["--no-content-type"])
        .env_remove("HOOKGATE_SECRET")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Value::Object(
        text.lines()
            .map(|l| {
                let (k, v) = l.split_once(": ").expect("Name: value");
                (k.to_owned(), Value::String(v.to_owned()))
            })
            .collect(),
    )
}

fn verify(scheme: &str, secret: &str, headers: &[(String, String)], body: &str) -> Output {
    let file = temp_file(&format!("verify-{scheme}"), body.as_bytes());
    let mut cmd = Command::new(BIN);
    cmd.args(["verify", "--scheme", scheme, "--secret", secret]);
    for (k, v) in headers {
        cmd.args(["--header", &format!("{k}: {v}")]);
    }
    cmd.args(["--body-file", file.0.to_str().unwrap()])
        .env_remove("HOOKGATE_SECRET")
        .output()
        .unwrap()
}

fn tampered(body: &str) -> String {
    body.replace('✓', "x")
}

/// Flip one bit of the decoded signature in `value` (base64 or hex), keeping the encoding.
fn flip_signature(value: &str, hex: bool) -> String {
    if hex {
        let mut raw = hex_decode(value);
        raw[10] ^= 0x01;
        raw.iter().map(|b| format!("{b:02x}")).collect()
    } else {
        let (version, b64) = value.split_once(',').unwrap();
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        raw[10] ^= 0x01;
        format!(
            "{version},{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn pairs(headers: &Value) -> Vec<(String, String)> {
    answer_headers(&json!({ "headers": headers }))
}

fn with(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            let v = if k.eq_ignore_ascii_case(name) {
                value.to_owned()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

#[test]
fn v1a_hookgate_sign_verifies_in_pynacl_and_tampering_fails() {
    let Some(interop) = interop() else { return };
    let headers = sign("standard", &[&whsk()], "msg_v1a_1", BODY);
    let sig = headers["webhook-signature"].as_str().unwrap().to_owned();
    assert!(sig.starts_with("v1a,"), "{sig}");
    let case = |headers: &Value, body: &str| {
        json!({"lib": "pynacl-v1a", "op": "verify", "secret": whsk(), "id": "",
               "timestamp": 0, "body": body, "headers": headers})
    };
    let mut forged = headers.clone();
    forged["webhook-signature"] = Value::String(flip_signature(&sig, false));
    let answers = interop.run(
        Runtime::Python,
        &[
            case(&headers, BODY),
            case(&headers, &tampered(BODY)),
            case(&forged, BODY),
        ],
    );
    assert_eq!(
        answers[0]["ok"], true,
        "PyNaCl rejected v1a: {}",
        answers[0]
    );
    assert_eq!(answers[0]["id"], "msg_v1a_1");
    assert_eq!(answers[1]["ok"], false, "PyNaCl accepted a changed body");
    assert_eq!(
        answers[2]["ok"], false,
        "PyNaCl accepted a changed signature"
    );
}

#[test]
fn pynacl_v1a_signatures_pass_hookgate_verify() {
    let Some(interop) = interop() else { return };
    let answers = interop.run(
        Runtime::Python,
        &[json!({"lib": "pynacl-v1a", "op": "sign", "secret": whsk(),
                 "id": "msg_v1a_py", "timestamp": now(), "body": BODY})],
    );
    let public = answers[0]["public_key"].as_str().unwrap().to_owned();
    assert!(public.starts_with("whpk_"));
    let headers = answer_headers(&answers[0]);
    let out = verify("standard", &public, &headers, BODY);
    assert_eq!(
        out.status.code(),
        Some(0),
        "hookgate verify rejected PyNaCl's v1a: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "msg_v1a_py");
    let out = verify("standard", &public, &headers, &tampered(BODY));
    assert_eq!(out.status.code(), Some(1), "changed body accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_signature"));
    let sig = headers
        .iter()
        .find(|(k, _)| k == "webhook-signature")
        .unwrap()
        .1
        .clone();
    let forged = with(&headers, "webhook-signature", &flip_signature(&sig, false));
    assert_eq!(
        verify("standard", &public, &forged, BODY).status.code(),
        Some(1)
    );
}

#[test]
fn mixed_v1_and_v1a_header_verifies_in_both_libraries() {
    let Some(interop) = interop() else { return };
    // A sender rotating from an HMAC secret to an ed25519 key signs with both.
    let headers = sign("standard", &[&whsk(), HMAC], "msg_mixed", BODY);
    let sig = headers["webhook-signature"].as_str().unwrap();
    assert!(sig.starts_with("v1a,") && sig.contains(" v1,"), "{sig}");
    // The command line only has the signed headers' timestamp: the
    // reference library checks it against its own clock, so sign "now".
    let answers = interop.run(
        Runtime::Python,
        &[
            json!({"lib": "standardwebhooks", "op": "verify", "secret": HMAC, "id": "",
                   "timestamp": 0, "body": BODY, "headers": headers}),
            json!({"lib": "pynacl-v1a", "op": "verify", "secret": whsk(), "id": "",
                   "timestamp": 0, "body": BODY, "headers": headers}),
            json!({"lib": "standardwebhooks", "op": "verify", "secret": HMAC, "id": "",
                   "timestamp": 0, "body": tampered(BODY), "headers": headers}),
        ],
    );
    assert_eq!(
        answers[0]["ok"], true,
        "standardwebhooks rejected the v1 entry beside v1a: {}",
        answers[0]
    );
    assert_eq!(
        answers[1]["ok"], true,
        "PyNaCl rejected the v1a entry: {}",
        answers[1]
    );
    assert_eq!(answers[2]["ok"], false);
    // hookgate verifies it with either key, and with both (rotation).
    let public = answers_public_key();
    let h = pairs(&headers);
    for secrets in [vec![HMAC], vec![public.as_str()]] {
        let out = verify("standard", secrets[0], &h, BODY);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{secrets:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The whpk_ of [`SEED`], as hookgate derives it (PyNaCl's own derivation
/// is checked in `pynacl_v1a_signatures_pass_hookgate_verify`).
fn answers_public_key() -> String {
    hookgate_core::Secret::ed25519_signing_key(SEED)
        .public_key_string()
        .unwrap()
}

#[test]
fn discord_both_directions_with_pynacl() {
    let Some(interop) = interop() else { return };
    let ts = now();
    let answers = interop.run(
        Runtime::Python,
        &[
            json!({"lib": "pynacl-discord", "op": "sign", "secret": whsk(),
                 "id": "", "timestamp": ts, "body": BODY}),
        ],
    );
    let public_hex = answers[0]["public_key"].as_str().unwrap().to_owned();
    assert_eq!(public_hex.len(), 64);
    let headers = answer_headers(&answers[0]);
    // PyNaCl's signature passes `hookgate verify --scheme discord` with the
    // hex public key, as Discord's portal shows it.
    let out = verify("discord", &public_hex, &headers, BODY);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "evt_ed25519",
        "the JSON body's id"
    );
    assert_eq!(
        verify("discord", &public_hex, &headers, &tampered(BODY))
            .status
            .code(),
        Some(1)
    );
    let sig = headers
        .iter()
        .find(|(k, _)| k == "X-Signature-Ed25519")
        .unwrap()
        .1
        .clone();
    let forged = with(&headers, "X-Signature-Ed25519", &flip_signature(&sig, true));
    assert_eq!(
        verify("discord", &public_hex, &forged, BODY).status.code(),
        Some(1)
    );

    // And hookgate's Discord signature verifies in PyNaCl (Discord's recipe).
    let ours = sign("discord", &[&whsk()], "unused", BODY);
    let case = |headers: &Value, body: &str| {
        json!({"lib": "pynacl-discord", "op": "verify", "secret": public_hex, "id": "",
               "timestamp": 0, "body": body, "headers": headers})
    };
    let mut forged = ours.clone();
    let ours_sig = ours["X-Signature-Ed25519"].as_str().unwrap();
    forged["X-Signature-Ed25519"] = Value::String(flip_signature(ours_sig, true));
    let answers = interop.run(
        Runtime::Python,
        &[
            case(&ours, BODY),
            case(&ours, &tampered(BODY)),
            case(&forged, BODY),
        ],
    );
    assert_eq!(
        answers[0]["ok"], true,
        "PyNaCl rejected hookgate's Discord signature: {}",
        answers[0]
    );
    assert_eq!(answers[1]["ok"], false);
    assert_eq!(answers[2]["ok"], false);
}
