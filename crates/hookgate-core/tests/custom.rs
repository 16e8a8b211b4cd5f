//! Custom HMAC schemes: providers that are not built in, checked against
//! values computed per their published docs (with Python's `hmac`, an
//! implementation independent of hookgate), plus the negatives every
//! scheme gets.

use hookgate_core::{
    scheme::{Algorithm, Encoding},
    ConfigError, Malformed, Scheme, Signer, Verifier, VerifyError,
};

const NOW: i64 = 1_700_000_000;

fn pairs<'a>(list: &[(&'a str, &'a str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn set(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
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

/// Linear: "Linear-Signature: hex(HMAC-SHA256(secret, raw body))"
/// (https://linear.app/developers/webhooks, "Securing webhooks"). The
/// delivery id `Linear-Delivery` is not signed; the timestamp is inside
/// the body (`webhookTimestamp`, milliseconds), so there is no header
/// timestamp to check.
fn linear() -> Scheme {
    Scheme::custom("Linear-Signature")
        .name("linear")
        .id_header("Linear-Delivery")
        .build()
        .unwrap()
}

const LINEAR_SECRET: &str = "lin_wh_secret_for_tests";
const LINEAR_BODY: &[u8] = br#"{"action":"create","type":"Issue","data":{"id":"2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9","title":"Bug"},"webhookTimestamp":1700000000000}"#;
/// python3: hmac.new(b"lin_wh_secret_for_tests", body, hashlib.sha256).hexdigest()
const LINEAR_SIG: &str = "7102fb431036fe08191ed7e25f56b28de41d17e94d9ee86c483072da222d15cb";

/// Zoom: "x-zm-signature: v0=" + hex(HMAC-SHA256(secret token,
/// "v0:{x-zm-request-timestamp}:{body}")) (Zoom developer docs, "Using
/// webhooks", "Verify webhook events").
fn zoom() -> Scheme {
    Scheme::custom("x-zm-signature")
        .name("zoom")
        .signed("v0:{timestamp}:{body}")
        .prefix("v0=")
        .timestamp_header("x-zm-request-timestamp")
        .build()
        .unwrap()
}

const ZOOM_SECRET: &str = "zoom_secret_token_for_tests";
const ZOOM_BODY: &[u8] = br#"{"event":"meeting.started","payload":{"account_id":"AAAA","object":{"id":"85912345678"}},"event_ts":1700000000123}"#;
/// python3: "v0=" + hmac.new(secret, b"v0:1700000000:" + body, hashlib.sha256).hexdigest()
const ZOOM_SIG: &str = "v0=6e03823167d881ebe6f6720f2a78c3a1dc5a77ff4f9ca390c06c921148e918a4";

#[test]
fn linear_documented_recipe_verifies_and_signs_alike() {
    let scheme = linear();
    let v = Verifier::from_secret_strings(scheme, [LINEAR_SECRET]).unwrap();
    let h = pairs(&[
        ("Linear-Signature", LINEAR_SIG),
        ("Linear-Delivery", "234d1a4e-b617-4388-90fe-adc3633d6b72"),
        ("Linear-Event", "Issue"),
    ]);
    let ok = v.verify_at(&h, LINEAR_BODY, NOW).unwrap();
    assert_eq!(ok.scheme.name(), "linear");
    assert_eq!(
        ok.id.as_deref(),
        Some("234d1a4e-b617-4388-90fe-adc3633d6b72")
    );
    assert_eq!(ok.timestamp, None);
    assert!(!v.id_is_signed(), "the delivery id is not signed");
    // Upper-case hex is the same signature.
    let upper = set(&h, "Linear-Signature", &LINEAR_SIG.to_uppercase());
    assert!(v.verify_at(&upper, LINEAR_BODY, NOW).is_ok());
    // hookgate's signer writes the same value.
    let signed = Signer::new(scheme, scheme.secret(LINEAR_SECRET).unwrap()).sign(
        "234d1a4e-b617-4388-90fe-adc3633d6b72",
        NOW,
        LINEAR_BODY,
    );
    assert_eq!(signed[0], ("linear-signature", LINEAR_SIG.to_owned()));
    // One changed byte anywhere in the body fails.
    for i in 0..LINEAR_BODY.len() {
        let mut body = LINEAR_BODY.to_vec();
        body[i] ^= 0x20;
        assert_eq!(
            v.verify_at(&h, &body, NOW),
            Err(VerifyError::NoMatchingSignature),
            "byte {i}"
        );
    }
}

#[test]
fn zoom_documented_recipe_verifies_with_tolerance() {
    let scheme = zoom();
    let v = Verifier::from_secret_strings(scheme, [ZOOM_SECRET]).unwrap();
    let h = pairs(&[
        ("x-zm-signature", ZOOM_SIG),
        ("x-zm-request-timestamp", "1700000000"),
    ]);
    let ok = v.verify_at(&h, ZOOM_BODY, NOW + 10).unwrap();
    assert_eq!(ok.timestamp, Some(NOW));
    let signed = Signer::new(scheme, scheme.secret(ZOOM_SECRET).unwrap()).sign("", NOW, ZOOM_BODY);
    assert_eq!(
        signed,
        vec![
            ("x-zm-signature", ZOOM_SIG.to_owned()),
            ("x-zm-request-timestamp", NOW.to_string()),
        ]
    );
    // The timestamp is signed, and checked before the MAC in both directions.
    assert_eq!(
        v.verify_at(
            &set(&h, "x-zm-request-timestamp", "1700000001"),
            ZOOM_BODY,
            NOW
        ),
        Err(VerifyError::NoMatchingSignature)
    );
    assert!(matches!(
        v.verify_at(&h, ZOOM_BODY, NOW + 301),
        Err(VerifyError::TimestampTooOld { .. })
    ));
    assert!(matches!(
        v.verify_at(&h, ZOOM_BODY, NOW - 301),
        Err(VerifyError::TimestampInFuture { .. })
    ));
    // Boundary: exactly the tolerance passes.
    assert!(v.verify_at(&h, ZOOM_BODY, NOW + 300).is_ok());
    // One changed signature character fails.
    let mut sig = ZOOM_SIG.to_owned();
    sig.replace_range(10..11, if &sig[10..11] == "0" { "1" } else { "0" });
    assert_eq!(
        v.verify_at(&set(&h, "x-zm-signature", &sig), ZOOM_BODY, NOW),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn custom_negatives() {
    let scheme = zoom();
    let v = Verifier::from_secret_strings(scheme, [ZOOM_SECRET]).unwrap();
    let h = pairs(&[
        ("x-zm-signature", ZOOM_SIG),
        ("x-zm-request-timestamp", "1700000000"),
    ]);
    let sig = "x-zm-signature";
    let hex = ZOOM_SIG.strip_prefix("v0=").unwrap();
    let cases: Vec<(String, Malformed)> = vec![
        (hex.to_owned(), Malformed::BadSyntax),
        (format!("v1={hex}"), Malformed::NoSupportedSignature),
        ("v0=".to_owned(), Malformed::Empty),
        (
            format!("v0={}", &hex[..62]),
            Malformed::WrongLength { len: 31 },
        ),
        (
            format!("v0={}zz", &hex[..62]),
            Malformed::BadEncoding { encoding: "hex" },
        ),
        (format!("v0={hex}{hex}"), Malformed::WrongLength { len: 64 }),
    ];
    for (value, reason) in cases {
        assert_eq!(
            v.verify_at(&set(&h, sig, &value), ZOOM_BODY, NOW),
            Err(VerifyError::MalformedHeader { name: sig, reason }),
            "{value}"
        );
    }
    for (name, value, reason) in [
        ("x-zm-request-timestamp", "-1", Malformed::BadTimestamp),
        ("x-zm-request-timestamp", "1.5", Malformed::BadTimestamp),
        ("x-zm-signature", "v0=\u{e9}", Malformed::NotText),
    ] {
        assert_eq!(
            v.verify_at(&set(&h, name, value), ZOOM_BODY, NOW),
            Err(VerifyError::MalformedHeader { name, reason }),
            "{value}"
        );
    }
    let missing: Vec<(String, String)> = h
        .iter()
        .filter(|(k, _)| k != "x-zm-request-timestamp")
        .cloned()
        .collect();
    assert_eq!(
        v.verify_at(&missing, ZOOM_BODY, NOW),
        Err(VerifyError::MissingHeader {
            name: "x-zm-request-timestamp"
        })
    );
    // Custom schemes take HMAC secrets only.
    let ed = hookgate_core::Secret::ed25519_signing_key([1; 32]);
    assert!(matches!(
        Verifier::new(scheme, [ed]),
        Err(ConfigError::WrongKeyKind { .. })
    ));
    // Not reachable by name: custom schemes are built.
    assert!(matches!(
        "zoom".parse::<Scheme>(),
        Err(ConfigError::UnknownScheme(_))
    ));
}

/// Intercom-style: `X-Hub-Signature: sha1=<hex HMAC-SHA1 of the body>`.
#[test]
fn sha1_and_sha512_base64_with_several_signatures() {
    let intercom = Scheme::custom("X-Hub-Signature")
        .name("intercom")
        .algorithm(Algorithm::Sha1)
        .prefix("sha1=")
        .build()
        .unwrap();
    let body =
        br#"{"type":"notification_event","id":"notif_1","topic":"conversation.user.created"}"#;
    let v = Verifier::from_secret_strings(intercom, ["intercom_client_secret"]).unwrap();
    // python3: "sha1=" + hmac.new(b"intercom_client_secret", body, hashlib.sha1).hexdigest()
    let h = pairs(&[(
        "X-Hub-Signature",
        "sha1=9dc1da3f5adc6b7dadc4ca696e27bd7fe7acb6f3",
    )]);
    assert!(v.verify_at(&h, body, NOW).is_ok());

    let multi = Scheme::custom("x-sig")
        .name("sha512-multi")
        .signed("{id}|{timestamp}|{body}")
        .algorithm(Algorithm::Sha512)
        .encoding(Encoding::Base64)
        .separator(',')
        .timestamp_header("x-ts")
        .id_header("x-id")
        .build()
        .unwrap();
    // python3: base64(hmac.new(b"k512", b"evt_9|1700000000|" + body, hashlib.sha512).digest())
    let good =
        "68VM+E/LmOWc/MjKUVwqcxWdIwgbySPPF+VHnwbz7q44QYPTUnAJQElyoy7iysDlIjb5j4sZjrJ2dVVWjk1cDw==";
    let v = Verifier::from_secret_strings(multi, ["other", "k512"]).unwrap();
    let other = Signer::new(multi, multi.secret("other").unwrap()).sign("evt_9", NOW, body);
    let other_sig = other[0].1.clone();
    let h = pairs(&[
        ("x-sig", &format!("AAAA, {good}")),
        ("x-ts", "1700000000"),
        ("x-id", "evt_9"),
    ]);
    let ok = v.verify_at(&h, body, NOW).unwrap();
    assert_eq!(ok.key_index, 1);
    assert_eq!(ok.id.as_deref(), Some("evt_9"));
    assert!(v.id_is_signed());
    assert_eq!(
        v.verify_at(&set(&h, "x-id", "evt_8"), body, NOW),
        Err(VerifyError::NoMatchingSignature),
        "the id is signed"
    );
    let both = set(&h, "x-sig", &format!("{other_sig},{good}"));
    assert_eq!(v.verify_at(&both, body, NOW).unwrap().key_index, 0);
    // The signature count is bounded.
    let many = vec![good; 17].join(",");
    assert_eq!(
        v.verify_at(&set(&h, "x-sig", &many), body, NOW),
        Err(VerifyError::MalformedHeader {
            name: "x-sig",
            reason: Malformed::TooManySignatures { max: 16 }
        })
    );
    // A signer with two secrets writes both.
    let signer = Signer::with_secrets(
        multi,
        [
            multi.secret("k512").unwrap(),
            multi.secret("other").unwrap(),
        ],
    )
    .unwrap();
    let sig = signer.sign("evt_9", NOW, body);
    assert_eq!(sig[0].1, format!("{good},{other_sig}"));
}

#[cfg(feature = "toml")]
#[test]
fn toml_definitions() {
    let zoom_toml = hookgate_core::scheme::CustomScheme::from_toml(
        r#"
        name = "zoom"
        signature_header = "x-zm-signature"
        signed = "v0:{timestamp}:{body}"
        algorithm = "sha256"
        encoding = "hex"
        prefix = "v0="
        timestamp_header = "x-zm-request-timestamp"
        "#,
    )
    .unwrap();
    assert_eq!(zoom_toml, zoom(), "the same definition, interned");
    let err = hookgate_core::scheme::CustomScheme::from_toml(
        "signature_header = \"x\"\nsecret = \"sup3rsecret\"\n",
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::InvalidCustomSchemeFile { line: Some(2), .. }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("sup3rsecret"), "{err}");
    assert!(matches!(
        hookgate_core::scheme::CustomScheme::from_toml(
            "signature_header = \"x\"\nalgorithm = \"md5\""
        ),
        Err(ConfigError::InvalidCustomScheme {
            field: "algorithm",
            ..
        })
    ));
}
