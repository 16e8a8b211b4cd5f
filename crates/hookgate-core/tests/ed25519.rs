//! Asymmetric signatures: Standard Webhooks `v1a` (ed25519, `whsk_` / `whpk_`
//! keys) beside `v1`, and Discord-style `X-Signature-Ed25519`. The
//! independent cross-check (PyNaCl) is in the CLI's `ed25519_interop` test.

use base64::Engine as _;
use hookgate_core::{
    ConfigError, KeyKind, Malformed, Scheme, Secret, Signer, Verifier, VerifyError,
};

const NOW: i64 = 1_700_000_000;
const BODY: &[u8] = br#"{"id":"evt_1","type":"contact.created"}"#;
const HMAC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

type Pairs = Vec<(String, String)>;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A signing key string and its public key string, from a seed.
fn keypair(seed: u8) -> (String, String) {
    let sk = Secret::ed25519_signing_key([seed; 32]);
    (sk.to_standard_string(), sk.public_key_string().unwrap())
}

fn sign(scheme: Scheme, secrets: &[&str], id: &str, ts: i64, body: &[u8]) -> Pairs {
    let keys = secrets.iter().map(|s| scheme.secret(s).unwrap());
    Signer::with_secrets(scheme, keys)
        .unwrap()
        .sign(id, ts, body)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

fn get<'a>(headers: &'a Pairs, name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap()
}

fn set(headers: &Pairs, name: &str, value: &str) -> Pairs {
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
fn keys_parse_by_prefix() {
    let (sk, pk) = keypair(1);
    assert!(sk.starts_with("whsk_") && pk.starts_with("whpk_"));
    let s = Scheme::StandardWebhooks;
    assert_eq!(s.secret(&sk).unwrap().kind(), KeyKind::Ed25519Signing);
    assert_eq!(s.secret(&pk).unwrap().kind(), KeyKind::Ed25519Public);
    assert_eq!(s.secret(HMAC).unwrap().kind(), KeyKind::Hmac);
    // The 64-byte (seed || public key) form libsodium and PyNaCl print.
    let seed = [1u8; 32];
    let public = Secret::ed25519_signing_key(seed)
        .public_key_bytes()
        .unwrap();
    let long = format!("whsk_{}", b64(&[&seed[..], &public[..]].concat()));
    assert_eq!(
        s.secret(&long).unwrap().public_key_bytes(),
        Some(public),
        "64-byte form"
    );
    // ... whose halves must belong together.
    let wrong = format!("whsk_{}", b64(&[&seed[..], &[2u8; 32][..]].concat()));
    assert_eq!(
        s.secret(&wrong).unwrap_err(),
        ConfigError::InvalidSecretEncoding
    );
    for bad in ["whsk_", "whpk_"] {
        assert_eq!(s.secret(bad).unwrap_err(), ConfigError::EmptySecret);
    }
    for bad in ["whsk_AAAA", "whpk_AAAA", "whpk_not base64", "whsk_!!"] {
        assert_eq!(
            s.secret(bad).unwrap_err(),
            ConfigError::InvalidSecretEncoding,
            "{bad}"
        );
    }
    // A small-order point would let anyone forge: refused.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert_eq!(
        s.secret(&format!("whpk_{}", b64(&identity))).unwrap_err(),
        ConfigError::InvalidPublicKey
    );
    // Debug never shows key material; errors never echo it.
    let key = s.secret(&sk).unwrap();
    assert_eq!(format!("{key:?}"), "Secret(<redacted>)");
    let err = s.secret("whsk_c3VwM3JzZWNyZXQ=").unwrap_err();
    assert!(!err.to_string().contains("c3VwM3JzZWNyZXQ"));
}

#[test]
fn v1a_signs_and_verifies_with_the_public_key_only() {
    let (sk, pk) = keypair(3);
    let h = sign(Scheme::StandardWebhooks, &[&sk], "msg_1", NOW, BODY);
    let sig = get(&h, "webhook-signature");
    let value = sig.strip_prefix("v1a,").expect("a v1a entry");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(value)
            .unwrap()
            .len(),
        64
    );
    let v = Verifier::from_secret_strings(Scheme::StandardWebhooks, [&pk]).unwrap();
    let ok = v.verify_at(&h, BODY, NOW).unwrap();
    assert_eq!(ok.id.as_deref(), Some("msg_1"));
    assert_eq!(ok.timestamp, Some(NOW));
    // The signing key verifies too.
    let v = Verifier::from_secret_strings(Scheme::StandardWebhooks, [&sk]).unwrap();
    assert!(v.verify_at(&h, BODY, NOW).is_ok());
}

#[test]
fn v1a_tampered_byte_id_timestamp_or_other_key_fails() {
    let (sk, pk) = keypair(4);
    let (_, other_pk) = keypair(5);
    let h = sign(Scheme::StandardWebhooks, &[&sk], "msg_1", NOW, BODY);
    let v = Verifier::from_secret_strings(Scheme::StandardWebhooks, [&pk]).unwrap();
    for i in 0..BODY.len() {
        let mut body = BODY.to_vec();
        body[i] ^= 0x01;
        assert_eq!(
            v.verify_at(&h, &body, NOW),
            Err(VerifyError::NoMatchingSignature),
            "byte {i}"
        );
    }
    let sig = get(&h, "webhook-signature").to_owned();
    let mut raw = base64::engine::general_purpose::STANDARD
        .decode(sig.strip_prefix("v1a,").unwrap())
        .unwrap();
    for i in [0, 31, 32, 63] {
        raw[i] ^= 0x80;
        let forged = set(&h, "webhook-signature", &format!("v1a,{}", b64(&raw)));
        assert_eq!(
            v.verify_at(&forged, BODY, NOW),
            Err(VerifyError::NoMatchingSignature),
            "signature byte {i}"
        );
        raw[i] ^= 0x80;
    }
    assert_eq!(
        v.verify_at(&set(&h, "webhook-id", "msg_2"), BODY, NOW),
        Err(VerifyError::NoMatchingSignature)
    );
    let later = (NOW + 1).to_string();
    assert_eq!(
        v.verify_at(&set(&h, "webhook-timestamp", &later), BODY, NOW),
        Err(VerifyError::NoMatchingSignature)
    );
    let other = Verifier::from_secret_strings(Scheme::StandardWebhooks, [&other_pk]).unwrap();
    assert_eq!(
        other.verify_at(&h, BODY, NOW),
        Err(VerifyError::NoMatchingSignature)
    );
    // Stale before any signature check.
    assert!(matches!(
        v.verify_at(&h, BODY, NOW + 301),
        Err(VerifyError::TimestampTooOld { .. })
    ));
}

#[test]
fn v1a_malformed_entries() {
    let (sk, pk) = keypair(6);
    let h = sign(Scheme::StandardWebhooks, &[&sk], "msg_1", NOW, BODY);
    let v = Verifier::from_secret_strings(Scheme::StandardWebhooks, [&pk]).unwrap();
    let name = "webhook-signature";
    let cases = [
        ("v1a,", Malformed::Empty),
        ("v1a,AAAA", Malformed::WrongLength { len: 3 }),
        ("v1a,!!!!", Malformed::BadEncoding { encoding: "base64" }),
    ];
    for (value, reason) in cases {
        assert_eq!(
            v.verify_at(&set(&h, name, value), BODY, NOW),
            Err(VerifyError::MalformedHeader { name, reason }),
            "{value}"
        );
    }
    // A huge v1a value is refused without decoding it.
    let huge = format!("v1a,{}", "A".repeat(10_000));
    assert!(matches!(
        v.verify_at(&set(&h, name, &huge), BODY, NOW),
        Err(VerifyError::MalformedHeader {
            reason: Malformed::WrongLength { .. },
            ..
        })
    ));
    // A malformed entry beside the valid one is skipped.
    let good = get(&h, name).to_owned();
    assert!(v
        .verify_at(&set(&h, name, &format!("v1a,AAAA {good}")), BODY, NOW)
        .is_ok());
}

#[test]
fn mixed_v1_and_v1a_headers_and_rotation_across_both() {
    let (sk_new, pk_new) = keypair(7);
    // The sender rotates from an HMAC secret to an ed25519 key: it signs
    // with both, one entry each.
    let h = sign(
        Scheme::StandardWebhooks,
        &[&sk_new, HMAC],
        "msg_r",
        NOW,
        BODY,
    );
    let sig = get(&h, "webhook-signature");
    let entries: Vec<&str> = sig.split(' ').collect();
    assert_eq!(entries.len(), 2);
    assert!(entries[0].starts_with("v1a,") && entries[1].starts_with("v1,"));
    // A receiver still on the HMAC secret accepts ...
    let old = Verifier::from_secret_strings(Scheme::StandardWebhooks, [HMAC]).unwrap();
    assert_eq!(old.verify_at(&h, BODY, NOW).unwrap().key_index, 0);
    // ... one already on the public key accepts ...
    let new = Verifier::from_secret_strings(Scheme::StandardWebhooks, [&pk_new]).unwrap();
    assert_eq!(new.verify_at(&h, BODY, NOW).unwrap().key_index, 0);
    // ... and one holding both reports the first that matched.
    let both = Verifier::from_secret_strings(Scheme::StandardWebhooks, [&pk_new, HMAC]).unwrap();
    assert_eq!(both.verify_at(&h, BODY, NOW).unwrap().key_index, 0);
    let h_old = sign(Scheme::StandardWebhooks, &[HMAC], "msg_r", NOW, BODY);
    assert_eq!(both.verify_at(&h_old, BODY, NOW).unwrap().key_index, 1);
    // Rotation between two ed25519 keys.
    let (sk_a, pk_a) = keypair(8);
    let (sk_b, pk_b) = keypair(9);
    let v = Verifier::from_secret_strings(Scheme::StandardWebhooks, [&pk_a, &pk_b]).unwrap();
    let ha = sign(Scheme::StandardWebhooks, &[&sk_a], "m", NOW, BODY);
    let hb = sign(Scheme::StandardWebhooks, &[&sk_b], "m", NOW, BODY);
    assert_eq!(v.verify_at(&ha, BODY, NOW).unwrap().key_index, 0);
    assert_eq!(v.verify_at(&hb, BODY, NOW).unwrap().key_index, 1);
    // A v1a signature never passes as v1 for an HMAC key and vice versa:
    // an HMAC-only verifier given only the v1a entry fails.
    let only_v1a = set(&h, "webhook-signature", entries[0]);
    assert_eq!(
        old.verify_at(&only_v1a, BODY, NOW),
        Err(VerifyError::NoMatchingSignature)
    );
    let only_v1 = set(&h, "webhook-signature", entries[1]);
    assert_eq!(
        new.verify_at(&only_v1, BODY, NOW),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn public_keys_cannot_sign_and_kinds_are_checked() {
    let (_, pk) = keypair(10);
    let public = Scheme::StandardWebhooks.secret(&pk).unwrap();
    assert!(!public.can_sign());
    assert_eq!(
        Signer::with_secrets(Scheme::StandardWebhooks, [public.clone()]).unwrap_err(),
        ConfigError::PublicKeyCannotSign
    );
    // Signer::new with a public key signs nothing, which never verifies.
    let h = Signer::new(Scheme::StandardWebhooks, public.clone()).sign("m", NOW, BODY);
    let v = Verifier::new(Scheme::StandardWebhooks, [public.clone()]).unwrap();
    assert!(v.verify_at(&h[..], BODY, NOW).is_err());
    // HMAC-only schemes refuse ed25519 keys; Discord refuses HMAC secrets.
    assert!(matches!(
        Verifier::new(Scheme::Stripe, [public]),
        Err(ConfigError::WrongKeyKind {
            scheme: "stripe",
            ..
        })
    ));
    assert!(matches!(
        Scheme::Discord.secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        Err(ConfigError::WrongKeyKind { .. })
    ));
    assert!(matches!(
        Verifier::new(
            Scheme::Discord,
            [Secret::from_bytes(b"k".to_vec()).unwrap()]
        ),
        Err(ConfigError::WrongKeyKind { .. })
    ));
}

#[test]
fn discord_signs_timestamp_and_body() {
    let sk = Secret::ed25519_signing_key([11; 32]);
    let pk_hex = hex::encode(sk.public_key_bytes().unwrap());
    let h: Pairs = Signer::new(Scheme::Discord, sk)
        .sign("ignored", NOW, BODY)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(get(&h, "X-Signature-Timestamp"), NOW.to_string());
    assert_eq!(get(&h, "X-Signature-Ed25519").len(), 128);
    // The portal's hex public key (either case).
    for key in [pk_hex.clone(), pk_hex.to_uppercase()] {
        let v = Verifier::from_secret_strings(Scheme::Discord, [&key]).unwrap();
        let ok = v.verify_at(&h, BODY, NOW).unwrap();
        assert_eq!(ok.id.as_deref(), Some("evt_1"), "the JSON body's id");
        assert_eq!(ok.timestamp, Some(NOW));
    }
    let v = Verifier::from_secret_strings(Scheme::Discord, [&pk_hex]).unwrap();
    let mut body = BODY.to_vec();
    body[3] ^= 1;
    assert_eq!(
        v.verify_at(&h, &body, NOW),
        Err(VerifyError::NoMatchingSignature)
    );
    let later = (NOW + 1).to_string();
    assert_eq!(
        v.verify_at(&set(&h, "X-Signature-Timestamp", &later), BODY, NOW),
        Err(VerifyError::NoMatchingSignature)
    );
    let sig = "X-Signature-Ed25519";
    let cases = [
        (String::new(), Malformed::Empty),
        ("ab".repeat(32), Malformed::WrongLength { len: 32 }),
        ("zz".repeat(64), Malformed::BadEncoding { encoding: "hex" }),
    ];
    for (value, reason) in cases {
        let hv = set(&h, sig, &value);
        assert_eq!(
            v.verify_at(&hv, BODY, NOW),
            Err(VerifyError::MalformedHeader { name: sig, reason }),
            "{value}"
        );
    }
    let no_ts: Pairs = h
        .iter()
        .filter(|(k, _)| k != "X-Signature-Timestamp")
        .cloned()
        .collect();
    assert_eq!(
        v.verify_at(&no_ts, BODY, NOW),
        Err(VerifyError::MissingHeader {
            name: "X-Signature-Timestamp"
        })
    );
    assert!(matches!(
        v.verify_at(&h, BODY, NOW - 301),
        Err(VerifyError::TimestampInFuture { .. })
    ));
    for bad in ["abcd", "zz", "whpk_AAAA"] {
        assert!(
            Scheme::Discord.secret(bad).is_err(),
            "{bad} is no Discord key"
        );
    }
    assert_eq!("discord".parse::<Scheme>().unwrap(), Scheme::Discord);
    assert!(Scheme::Discord.id_is_signed() && Scheme::Discord.has_timestamp());
}
