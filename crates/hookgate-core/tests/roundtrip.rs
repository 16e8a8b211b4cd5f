//! Property tests: sign → verify round-trips for every scheme, and any change
//! of one byte in the body, the (signed) id, the timestamp or the signature
//! is rejected.

use hookgate_core::{Scheme, Secret, Signer, Verifier, VerifyError};
use proptest::prelude::*;

const SCHEMES: [Scheme; 5] = Scheme::ALL;

fn scheme() -> impl Strategy<Value = Scheme> {
    (0..SCHEMES.len()).prop_map(|i| SCHEMES[i])
}

/// Ids as providers use them: visible ASCII, 1..=64 characters.
fn id() -> impl Strategy<Value = String> {
    proptest::collection::vec(0x21u8..=0x7e, 1..=64)
        .prop_map(|b| String::from_utf8(b).expect("ASCII"))
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..=64)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=1024)
}

/// Unix seconds from 1970 to year ~33658.
fn timestamp() -> impl Strategy<Value = i64> {
    0i64..1_000_000_000_000
}

fn signature_header(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::StandardWebhooks => "webhook-signature",
        Scheme::Stripe => "Stripe-Signature",
        Scheme::GitHub => "X-Hub-Signature-256",
        Scheme::Slack => "X-Slack-Signature",
        _ => "X-Shopify-Hmac-Sha256",
    }
}

fn setup(scheme: Scheme, key: &[u8]) -> (Signer, Verifier) {
    let signer = Signer::new(scheme, Secret::from_bytes(key.to_vec()).unwrap());
    let verifier = Verifier::new(scheme, [Secret::from_bytes(key.to_vec()).unwrap()]).unwrap();
    (signer, verifier)
}

type Pairs = Vec<(&'static str, String)>;

fn replace(headers: &Pairs, name: &str, value: String) -> Pairs {
    let mut out = headers.clone();
    let slot = out
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .expect("header present");
    slot.1 = value;
    out
}

/// Replace the byte at `pos` (modulo length) of an ASCII string with another
/// visible ASCII byte that differs from it even ignoring case (hex decoding
/// is case-insensitive, so `a` → `A` is the same signature).
fn change_one_char(s: &str, pos: usize, pick: u8) -> String {
    let mut bytes = s.as_bytes().to_vec();
    let i = pos % bytes.len();
    let old = bytes[i];
    let mut new = 0x20 + (pick % 95);
    while new.eq_ignore_ascii_case(&old) {
        new = 0x20 + ((new - 0x20 + 1) % 95);
    }
    bytes[i] = new;
    String::from_utf8(bytes).expect("ASCII")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sign_then_verify_round_trips(
        scheme in scheme(), key in key(), id in id(), ts in timestamp(), body in body(),
        skew in -300i64..=300,
    ) {
        let (signer, verifier) = setup(scheme, &key);
        let headers = signer.sign(&id, ts, &body);
        let v = verifier.verify_at(&headers[..], &body, ts + skew)
            .map_err(|e| TestCaseError::fail(format!("{scheme}: {e}")))?;
        prop_assert_eq!(v.scheme, scheme);
        prop_assert_eq!(v.key_index, 0);
        match scheme {
            Scheme::StandardWebhooks | Scheme::GitHub | Scheme::Shopify => {
                prop_assert_eq!(v.id.as_deref(), Some(id.as_str()));
            }
            _ => {}
        }
        prop_assert_eq!(v.timestamp, scheme.has_timestamp().then_some(ts));
    }

    #[test]
    fn stripe_reports_the_json_id(key in key(), id in "[a-zA-Z0-9_]{1,40}", ts in timestamp()) {
        let (signer, verifier) = setup(Scheme::Stripe, &key);
        let body = format!(r#"{{"id":"{id}","object":"event"}}"#);
        let headers = signer.sign("", ts, body.as_bytes());
        let v = verifier.verify_at(&headers[..], body.as_bytes(), ts).unwrap();
        prop_assert_eq!(v.id, Some(id));
    }

    #[test]
    fn any_body_byte_change_is_rejected(
        scheme in scheme(), key in key(), id in id(), ts in timestamp(),
        body in proptest::collection::vec(any::<u8>(), 1..=1024),
        pos in any::<usize>(), flip in 1u8..=255,
    ) {
        let (signer, verifier) = setup(scheme, &key);
        let headers = signer.sign(&id, ts, &body);
        let mut changed = body.clone();
        let i = pos % changed.len();
        changed[i] ^= flip;
        prop_assert_eq!(
            verifier.verify_at(&headers[..], &changed, ts),
            Err(VerifyError::NoMatchingSignature)
        );
        // Also a byte added or removed.
        let mut longer = body.clone();
        longer.insert(i, flip);
        prop_assert_eq!(verifier.verify_at(&headers[..], &longer, ts), Err(VerifyError::NoMatchingSignature));
        let mut shorter = body;
        shorter.remove(i);
        prop_assert_eq!(verifier.verify_at(&headers[..], &shorter, ts), Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn any_signed_id_change_is_rejected(
        key in key(), id in id(), ts in timestamp(), body in body(),
        pos in any::<usize>(), pick in any::<u8>(),
    ) {
        // Of the five, only Standard Webhooks signs its id header.
        let (signer, verifier) = setup(Scheme::StandardWebhooks, &key);
        let headers = signer.sign(&id, ts, &body);
        let other = change_one_char(&id, pos, pick);
        let forged = replace(&headers, "webhook-id", other);
        prop_assert!(verifier.verify_at(&forged[..], &body, ts).is_err());
    }

    #[test]
    fn any_timestamp_change_is_rejected(
        scheme in scheme(), key in key(), id in id(), ts in 1_000i64..1_000_000_000_000, body in body(),
        delta in -300i64..=300,
    ) {
        prop_assume!(scheme.has_timestamp() && delta != 0);
        let (signer, verifier) = setup(scheme, &key);
        let headers = signer.sign(&id, ts, &body);
        let forged_ts = ts + delta;
        let forged = match scheme {
            Scheme::StandardWebhooks => replace(&headers, "webhook-timestamp", forged_ts.to_string()),
            Scheme::Slack => replace(&headers, "X-Slack-Request-Timestamp", forged_ts.to_string()),
            _ => {
                let value = &headers[0].1;
                let rest = value.split_once(',').unwrap().1;
                replace(&headers, "Stripe-Signature", format!("t={forged_ts},{rest}"))
            }
        };
        // Within tolerance of the forged time, so only the MAC can reject it.
        prop_assert_eq!(
            verifier.verify_at(&forged[..], &body, forged_ts),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn any_signature_byte_change_is_rejected(
        scheme in scheme(), key in key(), id in id(), ts in timestamp(), body in body(),
        pos in any::<usize>(), pick in any::<u8>(),
    ) {
        let (signer, verifier) = setup(scheme, &key);
        let headers = signer.sign(&id, ts, &body);
        let name = signature_header(scheme);
        let value = headers.iter().find(|(k, _)| *k == name).unwrap().1.clone();
        let forged = replace(&headers, name, change_one_char(&value, pos, pick));
        let result = verifier.verify_at(&forged[..], &body, ts);
        prop_assert!(result.is_err(), "{} accepted {:?}", scheme, forged);
    }

    #[test]
    fn another_key_never_verifies(
        scheme in scheme(), key in key(), other in key(), id in id(), ts in timestamp(), body in body(),
    ) {
        // HMAC pads short keys with zeros, so `k` and `k\0` are the same key.
        let trim = |k: &[u8]| k.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        prop_assume!(key[..trim(&key)] != other[..trim(&other)]);
        let (signer, _) = setup(scheme, &key);
        let (_, verifier) = setup(scheme, &other);
        let headers = signer.sign(&id, ts, &body);
        prop_assert_eq!(verifier.verify_at(&headers[..], &body, ts), Err(VerifyError::NoMatchingSignature));
    }
}
