//! How the Postgres and Redis queues store endpoints and attempts as JSON.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::queue::{Attempt, QueueError, QueueErrorKind};
use crate::Endpoint;

/// An endpoint's stored configuration. Holds the secret strings.
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
}

#[allow(clippy::unnecessary_wraps)]
fn default_auto_disable() -> Option<crate::lifecycle::AutoDisable> {
    Some(crate::lifecycle::AutoDisable::default())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The endpoint's configuration as JSON (secrets included, `disabled` not).
pub(crate) fn endpoint_to_json(endpoint: &Endpoint) -> Result<String, QueueError> {
    let json = EndpointJson {
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
    };
    serde_json::to_string(&json).map_err(|e| {
        QueueError::new(QueueErrorKind::Backend, "cannot encode endpoint").with_source(e)
    })
}

/// The endpoint stored as `json`, with its `disabled` flag.
pub(crate) fn endpoint_from_json(json: &str, disabled: bool) -> Result<Endpoint, QueueError> {
    let bad =
        |what: &str| QueueError::new(QueueErrorKind::Backend, format!("stored endpoint: {what}"));
    let e: EndpointJson =
        serde_json::from_str(json).map_err(|e| bad("not valid JSON").with_source(e))?;
    let scheme = e
        .scheme
        .parse()
        .map_err(|err| bad("unknown scheme").with_source(err))?;
    Ok(Endpoint {
        id: e.id,
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
