//! One delivery attempt: sign afresh, send, classify.
//!
//! Each attempt signs with the endpoint's secrets at the current time (same
//! message id, new timestamp), sends `Content-Type: application/json` unless
//! the endpoint's headers say otherwise, never follows redirects, and goes
//! through the [SSRF guard](crate::ssrf). Errors recorded in an [`Attempt`]
//! never contain secrets or URL credentials, and its URL is masked
//! ([`redact::url`](crate::redact::url)).
//!
//! reqwest sets the connect timeout and the TLS client identity per HTTP
//! client, so a [`DeliveryClient`] keeps one client (and connection pool)
//! per distinct connect timeout and [mTLS identity](crate::ClientIdentity),
//! at most 8, dropping the least recently used beyond that. An endpoint with
//! a client identity presents it to receivers that ask for one.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use hookgate_core::Signer;
use http::{header, HeaderMap, HeaderName, HeaderValue};

use crate::{
    endpoint::parse_url,
    now_ms,
    outcome::{Class, Classifier},
    queue::Attempt,
    redact::url as redact_url,
    retry::parse_retry_after,
    ssrf::{GuardedResolver, Resolver, SsrfError, SsrfPolicy, SystemResolver},
    ClientIdentity, Endpoint, EndpointError, Message,
};

/// How much of a response body is read (and discarded) so the connection can be reused.
const MAX_DRAIN: usize = 64 * 1024;

/// How many HTTP clients (one per distinct connect timeout, each with its
/// own connection pool) a [`DeliveryClient`] keeps. reqwest sets the connect
/// timeout per client, so endpoints with many different connect timeouts
/// would otherwise each keep a pool forever; past this bound the least
/// recently used client is dropped (its idle connections close; requests in
/// flight finish on their own clone).
const MAX_CLIENTS: usize = 8;

/// The result of one attempt.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    /// What is recorded with the delivery.
    pub attempt: Attempt,
    /// What it means.
    pub class: Class,
    /// The receiver's `Retry-After`, if any.
    pub retry_after: Option<Duration>,
    /// The address connected to, when known.
    pub remote_addr: Option<SocketAddr>,
    /// Why the attempt failed, for the dead letter (`HTTP 400 Bad Request`,
    /// `refused: ...`); `None` when delivered.
    pub reason: Option<String>,
}

/// An endpoint checked and ready to sign with.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) endpoint: Endpoint,
    signer: Signer,
    url: reqwest::Url,
    url_redacted: String,
    headers: HeaderMap,
    /// The endpoint sets its own `Content-Type`.
    has_content_type: bool,
}

/// A signer with the secrets that sign at `now_ms` (rotation: previous
/// secrets until they expire, see [`Endpoint::signing_secrets`]).
fn signer_at(endpoint: &Endpoint, now_ms: i64) -> Result<Signer, EndpointError> {
    let invalid = |source| EndpointError::InvalidSecret {
        scheme: endpoint.scheme.name(),
        source,
    };
    let secrets = endpoint
        .signing_secrets(now_ms)
        .into_iter()
        .map(|s| endpoint.scheme.secret(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    Signer::with_secrets(endpoint.scheme, secrets).map_err(invalid)
}

impl Prepared {
    pub(crate) fn new(endpoint: Endpoint) -> Result<Self, EndpointError> {
        endpoint.validate()?;
        let signer = signer_at(&endpoint, now_ms())?;
        // Only the first URL is used until failover lands.
        let url = parse_url(&endpoint.urls[0])?;
        let mut headers = HeaderMap::new();
        for (name, value) in &endpoint.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| EndpointError::InvalidHeader(name.clone()))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| EndpointError::InvalidHeader(name.to_string()))?;
            headers.append(name, value);
        }
        let has_content_type = headers.contains_key(header::CONTENT_TYPE);
        Ok(Self {
            url_redacted: redact_url(&endpoint.urls[0]),
            endpoint,
            signer,
            url,
            headers,
            has_content_type,
        })
    }
}

/// Sends attempts. Cheap to clone; shares connection pools.
#[derive(Debug, Clone)]
pub struct DeliveryClient {
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
struct ClientInner {
    policy: Arc<SsrfPolicy>,
    resolver: GuardedResolver,
    classifier: Classifier,
    max_timeout: Duration,
    /// One HTTP client per connect timeout and client identity (reqwest
    /// sets both per client), least recently used first, at most [`MAX_CLIENTS`].
    clients: Mutex<Vec<(ClientKey, reqwest::Client)>>,
    /// Extra trusted root certificates (beside the built-in web roots).
    roots: Vec<reqwest::Certificate>,
}

/// What an HTTP client is built for: its connect timeout and the endpoint's
/// mTLS identity.
type ClientKey = (Duration, Option<ClientIdentity>);

/// A PEM bundle without a usable certificate.
#[derive(Debug, thiserror::Error)]
#[error("invalid root certificate (expected PEM)")]
#[non_exhaustive]
pub struct InvalidCertificate;

impl Default for DeliveryClient {
    fn default() -> Self {
        Self::new(SsrfPolicy::default(), Classifier::default())
    }
}

impl DeliveryClient {
    /// A client with this SSRF policy and status classifier, resolving through the system.
    #[must_use]
    pub fn new(policy: SsrfPolicy, classifier: Classifier) -> Self {
        Self::with_resolver(policy, classifier, Arc::new(SystemResolver))
    }

    /// As [`new`](Self::new), resolving host names through `resolver`.
    #[must_use]
    pub fn with_resolver(
        policy: SsrfPolicy,
        classifier: Classifier,
        resolver: Arc<dyn Resolver>,
    ) -> Self {
        let policy = Arc::new(policy);
        Self {
            inner: Arc::new(ClientInner {
                resolver: GuardedResolver {
                    policy: policy.clone(),
                    inner: resolver,
                },
                policy,
                classifier,
                max_timeout: Duration::MAX,
                clients: Mutex::new(Vec::new()),
                roots: Vec::new(),
            }),
        }
    }

    /// Cap every attempt's total timeout at `max` (the worker sets this below its lease).
    #[must_use]
    pub(crate) fn with_max_timeout(self, max: Duration) -> Self {
        let inner = &*self.inner;
        Self {
            inner: Arc::new(ClientInner {
                policy: inner.policy.clone(),
                resolver: inner.resolver.clone(),
                classifier: inner.classifier.clone(),
                max_timeout: max,
                clients: Mutex::new(Vec::new()),
                roots: inner.roots.clone(),
            }),
        }
    }

    /// Also trust the root certificates in the PEM bundle `pem` for
    /// receivers' TLS (a private CA; the built-in web roots stay trusted).
    ///
    /// # Errors
    /// [`InvalidCertificate`] when `pem` holds no parsable certificate.
    pub fn with_root_certificates(self, pem: &[u8]) -> Result<Self, InvalidCertificate> {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|_| InvalidCertificate)?;
        if certs.is_empty() {
            return Err(InvalidCertificate);
        }
        let inner = &*self.inner;
        let mut roots = inner.roots.clone();
        roots.extend(certs);
        Ok(Self {
            inner: Arc::new(ClientInner {
                policy: inner.policy.clone(),
                resolver: inner.resolver.clone(),
                classifier: inner.classifier.clone(),
                max_timeout: inner.max_timeout,
                clients: Mutex::new(Vec::new()),
                roots,
            }),
        })
    }

    /// The SSRF policy in force.
    #[must_use]
    pub fn policy(&self) -> &SsrfPolicy {
        &self.inner.policy
    }

    /// Make one attempt to deliver `message` to `endpoint`.
    ///
    /// Never fails: every problem, an invalid endpoint included, is an
    /// [`AttemptResult`] with a class and a reason.
    pub async fn attempt(&self, endpoint: &Endpoint, message: &Message) -> AttemptResult {
        match Prepared::new(endpoint.clone()) {
            Ok(p) => self.attempt_prepared(&p, message).await,
            Err(e) => AttemptResult {
                attempt: Attempt {
                    at_ms: now_ms(),
                    url: endpoint
                        .urls
                        .first()
                        .map(|u| redact_url(u))
                        .unwrap_or_default(),
                    status: None,
                    latency_ms: 0,
                    error: Some(e.to_string()),
                },
                class: Class::Permanent,
                retry_after: None,
                remote_addr: None,
                reason: Some(format!("invalid endpoint: {e}")),
            },
        }
    }

    fn client(
        &self,
        connect_timeout: Duration,
        identity: Option<&ClientIdentity>,
    ) -> Result<reqwest::Client, String> {
        let mut clients = self
            .inner
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = clients
            .iter()
            .position(|((t, id), _)| *t == connect_timeout && id.as_ref() == identity)
        {
            // Most recently used last.
            let entry = clients.remove(i);
            let client = entry.1.clone();
            clients.push(entry);
            return Ok(client);
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the host itself, past the guard.
            .no_proxy()
            .dns_resolver(Arc::new(self.inner.resolver.clone()))
            .connect_timeout(connect_timeout)
            .user_agent(concat!("hookgate/", env!("CARGO_PKG_VERSION")));
        for root in &self.inner.roots {
            builder = builder.add_root_certificate(root.clone());
        }
        if let Some(identity) = identity {
            // mTLS: presented when the receiver asks for a client certificate.
            builder = builder.identity(identity.to_reqwest().map_err(|e| e.to_string())?);
        }
        let client = builder.build().map_err(|e| error_chain(&e))?;
        if clients.len() >= MAX_CLIENTS {
            clients.remove(0);
        }
        clients.push(((connect_timeout, identity.cloned()), client.clone()));
        Ok(client)
    }

    /// A health check: `GET url` through the SSRF guard (redirects not
    /// followed), bounded by `timeout`. `Ok` with the status when one came
    /// back; `Err` with a reason (never secrets) otherwise.
    ///
    /// # Errors
    /// An invalid or refused URL, or no response in time.
    pub async fn probe(&self, url: &str, timeout: Duration) -> Result<u16, String> {
        let parsed = parse_url(url).map_err(|e| e.to_string())?;
        let literal = parsed.host_str().and_then(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .ok()
        });
        if let Some(ip) = literal {
            self.inner
                .policy
                .check(ip)
                .map_err(|f| format!("refused: {f}"))?;
        }
        let client = self
            .client(timeout, None)
            .map_err(|e| format!("http client: {e}"))?;
        let response = client
            .get(parsed)
            .timeout(timeout.min(self.inner.max_timeout))
            .send()
            .await
            .map_err(|e| classify_error(&e, timeout).1)?;
        if let Some(addr) = response.remote_addr() {
            self.inner
                .policy
                .check(addr.ip())
                .map_err(|f| format!("refused after connecting: {f}"))?;
        }
        Ok(response.status().as_u16())
    }

    pub(crate) async fn attempt_prepared(&self, p: &Prepared, message: &Message) -> AttemptResult {
        let at_ms = now_ms();
        let started = Instant::now();
        let fail = |class: Class, error: String, reason: String| AttemptResult {
            attempt: Attempt {
                at_ms,
                url: p.url_redacted.clone(),
                status: None,
                latency_ms: elapsed_ms(started),
                error: Some(error),
            },
            class,
            retry_after: None,
            remote_addr: None,
            reason: Some(reason),
        };

        // HTTPS by default: plain HTTP only where the endpoint or the
        // client's policy allows it.
        if p.url.scheme() == "http"
            && !p.endpoint.allow_http
            && !self.inner.policy.plain_http_allowed()
        {
            let index = p
                .endpoint
                .urls
                .iter()
                .position(|u| u == p.url.as_str())
                .unwrap_or(0);
            let msg = format!("refused: {}", EndpointError::PlainHttp { index: index + 1 });
            return fail(Class::Permanent, msg.clone(), msg);
        }

        // Literal IPs skip the resolver: check them here.
        let literal = p.url.host_str().and_then(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .ok()
        });
        if let Some(ip) = literal {
            if let Err(f) = self.inner.policy.check(ip) {
                let msg = format!("refused: {f}");
                return fail(Class::Permanent, msg.clone(), msg);
            }
        }

        let client = match self.client(
            p.endpoint.connect_timeout,
            p.endpoint.client_identity.as_ref(),
        ) {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("http client: {e}");
                return fail(Class::Retry, msg.clone(), msg);
            }
        };

        let mut headers = p.headers.clone();
        if !p.has_content_type {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        // Checked at enqueue; a message stored by other means is still
        // refused here rather than sent with a broken header.
        if let Err(e) = message.validate() {
            let msg = e.to_string();
            return fail(Class::Permanent, msg.clone(), msg);
        }
        let timestamp = at_ms.div_euclid(1000);
        // A prepared endpoint may be cached past a rotation's expiry: while
        // previous secrets exist, pick the signing secrets at this instant.
        let rotated;
        let signer = if p.endpoint.previous_secrets.is_empty() {
            &p.signer
        } else {
            match signer_at(&p.endpoint, at_ms) {
                Ok(s) => {
                    rotated = s;
                    &rotated
                }
                Err(e) => {
                    let msg = e.to_string();
                    return fail(Class::Permanent, msg.clone(), msg);
                }
            }
        };
        for (name, value) in signer.sign(&message.id, timestamp, &message.payload) {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                (Ok(n), Ok(v)) => {
                    headers.insert(n, v);
                }
                _ => {
                    let msg = format!("message id cannot be sent in header {name}");
                    return fail(Class::Permanent, msg.clone(), msg);
                }
            }
        }

        let timeout = p.endpoint.timeout.min(self.inner.max_timeout);
        let sent = client
            .post(p.url.clone())
            .headers(headers)
            .timeout(timeout)
            .body(message.payload.clone())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let (class, msg) = classify_error(&e, timeout);
                return fail(class, msg.clone(), msg);
            }
        };
        let latency_ms = elapsed_ms(started);
        let status = response.status().as_u16();
        let remote_addr = response.remote_addr();
        if let Some(addr) = remote_addr {
            if let Err(f) = self.inner.policy.check(addr.ip()) {
                let msg = format!("refused after connecting: {f}");
                return fail(Class::Permanent, msg.clone(), msg);
            }
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| parse_retry_after(v.as_bytes(), SystemTime::now()));
        let class = self.inner.classifier.classify_status(status);
        let reason_phrase = response.status().canonical_reason().unwrap_or("");
        drain(response).await;
        let reason = (class != Class::Delivered).then(|| {
            format!("HTTP {status} {reason_phrase}")
                .trim_end()
                .to_owned()
        });
        AttemptResult {
            attempt: Attempt {
                at_ms,
                url: p.url_redacted.clone(),
                status: Some(status),
                latency_ms,
                error: None,
            },
            class,
            retry_after,
            remote_addr,
            reason,
        }
    }
}

/// Read up to [`MAX_DRAIN`] bytes of the body so the connection can be reused.
async fn drain(mut response: reqwest::Response) {
    let mut read = 0;
    while read < MAX_DRAIN {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            _ => break,
        }
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Class and message of a failed request. The message never contains the URL.
fn classify_error(e: &reqwest::Error, timeout: Duration) -> (Class, String) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(ssrf) = err.downcast_ref::<SsrfError>() {
            return if ssrf.is_refusal() {
                (Class::Permanent, format!("refused: {ssrf}"))
            } else {
                (Class::Retry, format!("dns: {ssrf}"))
            };
        }
        source = err.source();
    }
    if e.is_timeout() {
        return (
            Class::Retry,
            format!("timeout after {}", humantime::format_duration(timeout)),
        );
    }
    let chain = error_chain(e);
    if e.is_connect() {
        return (Class::Retry, format!("connect: {chain}"));
    }
    if e.is_builder() {
        return (Class::Permanent, format!("request: {chain}"));
    }
    (Class::Retry, chain)
}

/// `e` and its sources, joined by `: `, without the URL.
fn error_chain(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut parts: Vec<String> = Vec::new();
    // reqwest's own Display includes the URL; skip to its sources.
    let mut source = e.source();
    while let Some(err) = source {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = err.source();
    }
    if parts.is_empty() {
        parts.push(error_kind(e).to_owned());
    }
    parts.join(": ")
}

fn error_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else if e.is_body() {
        "body error"
    } else if e.is_decode() {
        "decode error"
    } else if e.is_request() {
        "request error"
    } else {
        "http error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Endpoints with ever new connect timeouts must not grow the client
    /// cache (one connection pool each) without bound.
    #[test]
    fn client_cache_is_bounded() {
        let client = DeliveryClient::default();
        for ms in 1..=200 {
            client.client(Duration::from_millis(ms), None).unwrap();
        }
        let cached = client
            .inner
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        assert!(cached <= 16, "{cached} clients cached");
        assert_eq!(cached, MAX_CLIENTS);
    }

    #[test]
    fn client_cache_keeps_the_recently_used() {
        let client = DeliveryClient::default();
        let first = Duration::from_millis(1);
        client.client(first, None).unwrap();
        for ms in 2..=20 {
            // Using `first` again keeps it from being evicted.
            client.client(first, None).unwrap();
            client.client(Duration::from_millis(ms), None).unwrap();
        }
        let clients = client
            .inner
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let timeouts: Vec<u128> = clients.iter().map(|((t, _), _)| t.as_millis()).collect();
        assert_eq!(timeouts.len(), MAX_CLIENTS);
        assert!(timeouts.contains(&1), "{timeouts:?}");
        assert_eq!(timeouts.last(), Some(&20));
    }
}
