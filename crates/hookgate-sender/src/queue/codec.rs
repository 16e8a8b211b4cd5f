//! How the Postgres and Redis queues store endpoints and attempts as JSON.
//!
//! With a [`Keyring`], an endpoint's credentials (secrets, previous
//! secrets, header values, full URLs, mTLS identity) are sealed into one
//! `sealed` field ([`crate::seal`]); the clear part keeps masked URLs,
//! header names and the settings that are not secret.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::endpoint::{ClientIdentity, PreviousSecret};
use crate::queue::{Attempt, QueueError, QueueErrorKind};
use crate::seal::{Keyring, SealError, Sealed};
use crate::Endpoint;

/// An endpoint's stored configuration. Holds the secret strings unless sealed.
#[derive(Serialize, Deserialize)]
struct EndpointJson {
    id: String,
    urls: Vec<String>,
    scheme: String,
    secrets: Vec<String>,
    connect_timeout_ms: u64,
    timeout_ms: u64,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    breaker: crate::breaker::BreakerConfig,
    #[serde(default)]
    rate_limit: Option<crate::limiter::RateLimit>,
    #[serde(default)]
    max_in_flight: Option<u32>,
    #[serde(default)]
    health_url: Option<String>,
    #[serde(default)]
    tier: Option<crate::tier::Tier>,
    /// Absent in records written before auto-disable: the default rule.
    #[serde(default = "default_auto_disable")]
    auto_disable: Option<crate::lifecycle::AutoDisable>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    allow_http: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<Sealed>,
    /// The credentials, when not sealed.
    #[serde(default, flatten)]
    credentials: Credentials,
}

/// The parts of an endpoint that are sealed under a key.
#[derive(Serialize, Deserialize, Default)]
struct Credentials {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    previous_secrets: Vec<PreviousJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_cert_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_key_pem: Option<String>,
}

/// What the `sealed` field holds, once opened.
#[derive(Serialize, Deserialize)]
struct SealedPart {
    urls: Vec<String>,
    secrets: Vec<String>,
    header_values: Vec<String>,
    #[serde(flatten)]
    credentials: Credentials,
}

#[derive(Serialize, Deserialize)]
struct PreviousJson {
    secret: String,
    expires_at_ms: i64,
}

#[allow(clippy::unnecessary_wraps)]
fn default_auto_disable() -> Option<crate::lifecycle::AutoDisable> {
    Some(crate::lifecycle::AutoDisable::default())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn encode_error(e: serde_json::Error) -> QueueError {
    QueueError::new(QueueErrorKind::Backend, "cannot encode endpoint").with_source(e)
}

/// Warned once per process: a record was read in clear.
static READ_CLEAR_WARNED: AtomicBool = AtomicBool::new(false);

/// The endpoint's configuration as JSON (`disabled` not included), its
/// credentials sealed under `keys`' newest key when given.
pub(crate) fn endpoint_to_json(
    endpoint: &Endpoint,
    keys: Option<&Keyring>,
) -> Result<String, QueueError> {
    let credentials = Credentials {
        previous_secrets: endpoint
            .previous_secrets
            .iter()
            .map(|p| PreviousJson {
                secret: p.secret.clone(),
                expires_at_ms: p.expires_at_ms,
            })
            .collect(),
        client_cert_pem: endpoint
            .client_identity
            .as_ref()
            .map(|i| i.cert_pem.clone()),
        client_key_pem: endpoint.client_identity.as_ref().map(|i| i.key_pem.clone()),
    };
    let mut json = EndpointJson {
        id: endpoint.id.clone(),
        urls: endpoint.urls.clone(),
        scheme: endpoint.scheme.name().to_owned(),
        secrets: endpoint.secrets.clone(),
        connect_timeout_ms: millis(endpoint.connect_timeout),
        timeout_ms: millis(endpoint.timeout),
        headers: endpoint.headers.clone(),
        breaker: endpoint.breaker,
        rate_limit: endpoint.rate_limit,
        max_in_flight: endpoint.max_in_flight,
        health_url: endpoint.health_url.clone(),
        tier: endpoint.tier,
        auto_disable: endpoint.auto_disable,
        allow_http: endpoint.allow_http,
        sealed: None,
        credentials: Credentials::default(),
    };
    match keys {
        Some(keys) => {
            let part = SealedPart {
                urls: std::mem::take(&mut json.urls),
                secrets: std::mem::take(&mut json.secrets),
                header_values: json
                    .headers
                    .iter_mut()
                    .map(|(_, v)| std::mem::take(v))
                    .collect(),
                credentials,
            };
            let plain = Zeroizing::new(serde_json::to_vec(&part).map_err(encode_error)?);
            json.urls = part.urls.iter().map(|u| crate::redact::url(u)).collect();
            json.sealed = Some(keys.seal(&endpoint.id, &plain));
        }
        None => {
            tracing::warn!(
                endpoint = %endpoint.id,
                "endpoint secrets and header values are stored UNENCRYPTED: set {} or {} \
                 (see `hookgate endpoint rekey`)",
                crate::seal::KEY_ENV,
                crate::seal::KEY_FILE_ENV,
            );
            json.credentials = credentials;
        }
    }
    serde_json::to_string(&json).map_err(encode_error)
}

/// The endpoint stored under `id` as `json`, with its `disabled` flag,
/// opened with `keys` when sealed. The stored `id` is the one the
/// ciphertext is bound to, and the one the endpoint gets.
pub(crate) fn endpoint_from_json(
    json: &str,
    id: &str,
    disabled: bool,
    keys: Option<&Keyring>,
) -> Result<Endpoint, QueueError> {
    let bad =
        |what: &str| QueueError::new(QueueErrorKind::Backend, format!("stored endpoint: {what}"));
    let mut e: EndpointJson =
        serde_json::from_str(json).map_err(|e| bad("not valid JSON").with_source(e))?;
    let scheme = e
        .scheme
        .parse()
        .map_err(|err| bad("unknown scheme").with_source(err))?;
    if let Some(sealed) = e.sealed.take() {
        let Some(keys) = keys else {
            return Err(SealError::NoKeyring {
                endpoint: id.to_owned(),
                key_id: sealed.key_id,
            }
            .into());
        };
        let plain = keys.open(id, &sealed)?;
        let part: SealedPart =
            serde_json::from_slice(&plain).map_err(|_| SealError::Malformed {
                endpoint: id.to_owned(),
                what: "sealed content is not the expected JSON",
            })?;
        if part.header_values.len() != e.headers.len() {
            return Err(SealError::Malformed {
                endpoint: id.to_owned(),
                what: "header count differs",
            }
            .into());
        }
        e.urls = part.urls;
        e.secrets = part.secrets;
        for ((_, value), sealed_value) in e.headers.iter_mut().zip(part.header_values) {
            *value = sealed_value;
        }
        e.credentials = part.credentials;
    } else if !READ_CLEAR_WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            endpoint = %id,
            "endpoint records are stored UNENCRYPTED (first seen: this one); set {} and run \
             `hookgate endpoint rekey`",
            crate::seal::KEY_ENV,
        );
    }
    let client_identity = match (e.credentials.client_cert_pem, e.credentials.client_key_pem) {
        (Some(cert_pem), Some(key_pem)) => Some(ClientIdentity { cert_pem, key_pem }),
        _ => None,
    };
    Ok(Endpoint {
        id: id.to_owned(),
        urls: e.urls,
        scheme,
        secrets: e.secrets,
        connect_timeout: Duration::from_millis(e.connect_timeout_ms),
        timeout: Duration::from_millis(e.timeout_ms),
        headers: e.headers,
        disabled,
        breaker: e.breaker,
        rate_limit: e.rate_limit,
        max_in_flight: e.max_in_flight,
        health_url: e.health_url,
        tier: e.tier,
        auto_disable: e.auto_disable,
        allow_http: e.allow_http,
        client_identity,
        previous_secrets: e
            .credentials
            .previous_secrets
            .into_iter()
            .map(|p| PreviousSecret::new(p.secret, p.expires_at_ms))
            .collect(),
    })
}

/// A recorded attempt, as stored in Redis lists.
#[derive(Serialize, Deserialize)]
struct AttemptJson {
    at_ms: i64,
    url: String,
    status: Option<u16>,
    latency_ms: u64,
    error: Option<String>,
}

/// `attempt` as JSON.
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // Postgres has an attempts table
pub(crate) fn attempt_to_json(attempt: &Attempt) -> Result<String, QueueError> {
    serde_json::to_string(&AttemptJson {
        at_ms: attempt.at_ms,
        url: attempt.url.clone(),
        status: attempt.status,
        latency_ms: attempt.latency_ms,
        error: attempt.error.clone(),
    })
    .map_err(|e| QueueError::new(QueueErrorKind::Backend, "cannot encode attempt").with_source(e))
}

/// The attempt stored as `json`.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn attempt_from_json(json: &[u8]) -> Result<Attempt, QueueError> {
    let a: AttemptJson = serde_json::from_slice(json).map_err(|e| {
        QueueError::new(QueueErrorKind::Backend, "stored attempt: not valid JSON").with_source(e)
    })?;
    Ok(Attempt {
        at_ms: a.at_ms,
        url: a.url,
        status: a.status,
        latency_ms: a.latency_ms,
        error: a.error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookgate_core::Scheme;

    fn endpoint() -> Endpoint {
        Endpoint::new(
            "orders",
            "https://u:pw0rd@example.com/h?token=t0ken",
            Scheme::StandardWebhooks,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .unwrap()
        .with_header("Authorization", "Bearer b34rer")
        .unwrap()
        .rotate_secret("whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", 5_000)
        .unwrap()
    }

    #[test]
    fn sealed_record_holds_no_credential_and_round_trips() {
        let keys = Keyring::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let ep = endpoint();
        let json = endpoint_to_json(&ep, Some(&keys)).unwrap();
        for secret in ["MfKQ9r8G", "c2VjcmV0", "b34rer", "pw0rd", "t0ken", "whsec_"] {
            assert!(!json.contains(secret), "{secret} in {json}");
        }
        assert!(json.contains("\"kid\":\"k1\""), "{json}");
        let back = endpoint_from_json(&json, "orders", false, Some(&keys)).unwrap();
        assert_eq!(back.urls, ep.urls);
        assert_eq!(back.secrets, ep.secrets);
        assert_eq!(back.headers, ep.headers);
        assert_eq!(back.previous_secrets, ep.previous_secrets);
        // Under another id: the ciphertext does not open.
        let err = endpoint_from_json(&json, "billing", false, Some(&keys)).unwrap_err();
        assert_eq!(err.kind(), QueueErrorKind::Encryption);
        assert!(err.to_string().contains("k1"), "{err}");
        // Without keys: an error naming the key id, never an empty secret.
        let err = endpoint_from_json(&json, "orders", false, None).unwrap_err();
        assert!(err.to_string().contains("\"k1\""), "{err}");
    }

    #[test]
    fn clear_records_still_load() {
        let ep = endpoint();
        let json = endpoint_to_json(&ep, None).unwrap();
        assert!(json.contains("b34rer"));
        let keys = Keyring::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let back = endpoint_from_json(&json, "orders", false, Some(&keys)).unwrap();
        assert_eq!(back.secrets, ep.secrets);
        assert_eq!(back.previous_secrets, ep.previous_secrets);
        // A record written before these fields existed.
        let old = r#"{"id":"x","urls":["https://a.test/"],"scheme":"github","secrets":["s"],"connect_timeout_ms":5000,"timeout_ms":30000}"#;
        let back = endpoint_from_json(old, "x", true, None).unwrap();
        assert!(back.disabled && !back.allow_http && back.client_identity.is_none());
    }
}
