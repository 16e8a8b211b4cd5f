//! `hookgate serve --forward URL`: the verifying, deduplicating receiver as a
//! reverse proxy in front of an application in any language.
//!
//! The forwarder is the handler behind [`VerifyWebhookLayer`], so only a
//! request that passed verification and claimed its event id reaches it, a
//! duplicate is answered from the store, and the upstream's status goes
//! through the layer's final/release policy like a handler's: 2xx and most
//! 4xx are remembered; a 5xx releases the claim so the sender's retry is
//! forwarded again. An upstream that cannot be reached answers **502**, one
//! that does not answer within `--upstream-timeout` **504**; both release.
//!
//! What the upstream receives: the same method, the path and query appended
//! to the `--forward` base, the request's headers (less hop-by-hop ones), the
//! body unchanged, plus `Hookgate-Event-Id`, `Hookgate-Scheme` and
//! `Hookgate-Verified: true`. Nothing unverified is streamed upstream: the
//! layer has read and checked the whole body before the forwarder runs.
//!
//! [`VerifyWebhookLayer`]: hookgate_tower::VerifyWebhookLayer

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use hookgate_tower::VerifiedWebhook;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus those the client recomputes.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// How to reach the upstream.
#[derive(Debug, Clone)]
pub(crate) struct ForwardConfig {
    /// Base URL; the request's path and query are appended.
    pub(crate) base: reqwest::Url,
    /// Whole-request bound for one forward.
    pub(crate) timeout: Duration,
    /// Most forwards in flight at once (others wait for a slot).
    pub(crate) max_connections: usize,
    /// How long an idle upstream connection is kept open.
    pub(crate) keep_alive: Duration,
}

/// The forwarding handler's state.
#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    client: reqwest::Client,
    base: Arc<str>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Forwarder {
    pub(crate) fn new(config: &ForwardConfig) -> anyhow::Result<Self> {
        if !matches!(config.base.scheme(), "http" | "https") {
            anyhow::bail!("--forward must be an http:// or https:// URL");
        }
        if config.base.query().is_some() || config.base.fragment().is_some() {
            anyhow::bail!("--forward takes a base URL without query or fragment");
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .pool_idle_timeout(config.keep_alive)
            .pool_max_idle_per_host(config.max_connections)
            // The upstream is the user's own application: follow nothing,
            // answer its redirects to the sender as they are.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Self {
            client,
            base: config.base.as_str().trim_end_matches('/').into(),
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1))),
        })
    }
}

/// The axum handler: forward a verified, claimed request.
pub(crate) async fn forward(State(fwd): State<Forwarder>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(verified) = parts.extensions.get::<VerifiedWebhook>().cloned() else {
        // Only reachable if the route lost its layer: refuse rather than
        // pass an unverified request through.
        tracing::error!("forward called without a verified webhook; refusing");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    // The layer has buffered the body already; this is a copy of the handle.
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the verified body");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{}", fwd.base, path_and_query);
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 3);
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(id) = verified
        .id
        .as_deref()
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        headers.insert(HeaderName::from_static("hookgate-event-id"), id);
    }
    headers.insert(
        HeaderName::from_static("hookgate-scheme"),
        HeaderValue::from_static(verified.scheme.name()),
    );
    headers.insert(
        HeaderName::from_static("hookgate-verified"),
        HeaderValue::from_static("true"),
    );

    let Ok(_slot) = fwd.slots.clone().acquire_owned().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let started = std::time::Instant::now();
    let result = fwd
        .client
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match result {
        Ok(r) => r,
        Err(e) => {
            let status = if e.is_timeout() {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            tracing::warn!(
                event_id = verified.id.as_deref().unwrap_or(""),
                status = status.as_u16(),
                error = %e,
                "upstream did not answer; the claim is released so the sender retries"
            );
            return status.into_response();
        }
    };
    let status = upstream.status();
    let mut out_headers = HeaderMap::with_capacity(upstream.headers().len());
    for (name, value) in upstream.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            out_headers.append(name.clone(), value.clone());
        }
    }
    let bytes = match upstream.bytes().await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "upstream body failed; answering 502");
            return StatusCode::BAD_GATEWAY.into_response();
        }
    };
    tracing::info!(
        event_id = verified.id.as_deref().unwrap_or(""),
        status = status.as_u16(),
        latency_ms = started.elapsed().as_millis() as u64,
        "forwarded"
    );
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = out_headers;
    response
}
