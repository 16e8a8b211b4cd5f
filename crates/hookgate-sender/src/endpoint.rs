//! Endpoints: where messages go.

use std::time::Duration;

use hookgate_core::Scheme;

use crate::{breaker::BreakerConfig, lifecycle::AutoDisable, limiter::RateLimit, tier::Tier};

/// Default connect timeout per attempt.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default total timeout per attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A receiver: URL(s), signing scheme and secrets, timeouts, extra headers.
///
/// Endpoints are stored in the queue (so `hookgate dlq replay` can deliver
/// without the original program).
///
/// # Security
/// The endpoint record is the only place a URL's userinfo and query are
/// kept. `Debug` masks the secrets, every extra header's value (an
/// `Authorization: Bearer ..` header is a credential), and the URLs'
/// userinfo, query values and fragment ([`redact::url`](crate::redact::url));
/// attempt records carry the masked URL too. Derive ids from URLs with
/// [`Endpoint::id_from_url`], never by using the URL itself;
/// [`Endpoint::new`] refuses an id that is a URL with userinfo, query or
/// fragment.
///
/// The Postgres and Redis queues store the record with its credentials
/// sealed under the operator's keys when they have a keyring
/// ([`crate::seal`]), in clear otherwise, as statement parameters or values. tokio-postgres logs every statement's parameters at
/// `DEBUG` under the `tracing` target `tokio_postgres::query`: keep that
/// target at `INFO` or off wherever logs are kept (`hookgate` does).
#[derive(Clone)]
#[non_exhaustive]
pub struct Endpoint {
    /// Stable name, unique within a queue.
    pub id: String,
    /// URLs in failover order (only the first is used until failover lands).
    pub urls: Vec<String>,
    /// Signature scheme.
    pub scheme: Scheme,
    /// Secret strings as the scheme's provider writes them, newest first.
    pub secrets: Vec<String>,
    /// Connect timeout per attempt.
    pub connect_timeout: Duration,
    /// Total timeout per attempt.
    pub timeout: Duration,
    /// Extra headers sent with every attempt.
    pub headers: Vec<(String, String)>,
    /// Set when the receiver answered `410 Gone` or failed continuously
    /// (see [`auto_disable`](Self::auto_disable)); nothing is sent while
    /// set, and its messages are held until it is enabled again.
    pub disabled: bool,
    /// Circuit-breaker thresholds, applied to each URL (see [`crate::breaker`]).
    pub breaker: BreakerConfig,
    /// Adaptive rate limit shared by every worker (see [`crate::limiter`]); none by default.
    pub rate_limit: Option<RateLimit>,
    /// Most attempts to this endpoint running at once in one worker
    /// (default: the worker's per-endpoint cap).
    pub max_in_flight: Option<u32>,
    /// URL a GET is sent to on an interval while a breaker is open: success
    /// half-opens the breakers early (see [`crate::worker::WorkerBuilder::with_health_probe_interval`]).
    pub health_url: Option<String>,
    /// The tier whose preset was applied last ([`Endpoint::with_tier`]); its
    /// retry schedule and maximum age replace the worker's for this endpoint.
    pub tier: Option<Tier>,
    /// When continuous failure disables the endpoint (default: failing for
    /// 5 days with at least 10 failed attempts); `None` never.
    pub auto_disable: Option<AutoDisable>,
    /// Deliver to `http://` URLs. Off by default: plain HTTP exposes the
    /// payload, the signature and any credential header on the way, so an
    /// endpoint with an `http://` URL is refused ([`EndpointError::PlainHttp`])
    /// unless this is set (or the worker allows plain HTTP for every endpoint).
    pub allow_http: bool,
    /// Client certificate and key presented to the receiver (mTLS).
    pub client_identity: Option<ClientIdentity>,
    /// Secrets being rotated out, each signing until its expiry (see
    /// [`Endpoint::rotate_secret`] and [`Endpoint::signing_secrets`]).
    pub previous_secrets: Vec<PreviousSecret>,
}

/// A client certificate chain and its private key, PEM, presented to the
/// receiver when it asks for client authentication (mTLS). Stored sealed
/// like the secrets; `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientIdentity {
    /// The certificate chain, PEM (leaf first).
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
}

impl ClientIdentity {
    /// An identity from PEM text, checked to parse (a certificate and a key).
    ///
    /// # Errors
    /// [`EndpointError::InvalidClientIdentity`] when the PEM does not hold
    /// a certificate and a private key that fit together.
    pub fn from_pem(
        cert_pem: impl Into<String>,
        key_pem: impl Into<String>,
    ) -> Result<Self, EndpointError> {
        let identity = Self {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        };
        identity.to_reqwest()?;
        Ok(identity)
    }

    pub(crate) fn to_reqwest(&self) -> Result<reqwest::Identity, EndpointError> {
        let mut pem = String::with_capacity(self.key_pem.len() + self.cert_pem.len() + 1);
        pem.push_str(&self.key_pem);
        pem.push('\n');
        pem.push_str(&self.cert_pem);
        reqwest::Identity::from_pem(pem.as_bytes())
            .map_err(|_| EndpointError::InvalidClientIdentity)
    }
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity(<redacted>)")
    }
}

/// A secret being rotated out: it keeps signing until `expires_at_ms`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PreviousSecret {
    /// The secret, as the scheme's provider writes it.
    pub secret: String,
    /// When it stops signing, Unix milliseconds.
    pub expires_at_ms: i64,
}

impl PreviousSecret {
    /// `secret`, signing until `expires_at_ms` (Unix milliseconds).
    #[must_use]
    pub fn new(secret: impl Into<String>, expires_at_ms: i64) -> Self {
        Self {
            secret: secret.into(),
            expires_at_ms,
        }
    }
}

impl std::fmt::Debug for PreviousSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviousSecret")
            .field("secret", &Redacted)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field(
                "urls",
                &self
                    .urls
                    .iter()
                    .map(|u| crate::redact::url(u))
                    .collect::<Vec<_>>(),
            )
            .field("scheme", &self.scheme)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(name, _)| (name.as_str(), Redacted))
                    .collect::<Vec<_>>(),
            )
            .field("disabled", &self.disabled)
            .field("breaker", &self.breaker)
            .field("rate_limit", &self.rate_limit)
            .field("max_in_flight", &self.max_in_flight)
            .field(
                "health_url",
                &self.health_url.as_deref().map(crate::redact::url),
            )
            .field("tier", &self.tier)
            .field("auto_disable", &self.auto_disable)
            .field("allow_http", &self.allow_http)
            .field("client_identity", &self.client_identity)
            .field("previous_secrets", &self.previous_secrets)
            .finish()
    }
}

/// Shown in place of a header value.
struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An endpoint setting is invalid. Never contains secret material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The URL does not parse, or is not `http`/`https` with a host.
    #[error("invalid endpoint URL: {0}")]
    InvalidUrl(String),
    /// No URL was given.
    #[error("an endpoint needs at least one URL")]
    NoUrl,
    /// A secret does not parse for the endpoint's scheme.
    #[error("invalid secret for scheme {scheme}: {source}")]
    InvalidSecret {
        /// The scheme's name.
        scheme: &'static str,
        /// What was wrong (never the secret itself).
        #[source]
        source: hookgate_core::ConfigError,
    },
    /// No secret was given.
    #[error("an endpoint needs at least one secret")]
    NoSecret,
    /// An extra header's name or value is not valid HTTP.
    #[error("invalid header {0:?}")]
    InvalidHeader(String),
    /// A timeout is zero.
    #[error("{0} must be greater than zero")]
    ZeroTimeout(&'static str),
    /// The id is a URL with userinfo, a query or a fragment: ids end up in
    /// keys, labels and logs, so they must carry no credential (see
    /// [`Endpoint::id_from_url`]). The id is not repeated.
    #[error("endpoint id is a URL with credentials, query or fragment; use Endpoint::id_from_url")]
    CredentialsInId,
    /// A URL is plain `http://` and plain HTTP is not allowed (the
    /// endpoint's [`allow_http`](Endpoint::allow_http), or the worker's).
    /// The URL is not repeated (it may hold credentials); the index is.
    #[error(
        "URL {index} is plain http://, which exposes payloads, signatures and credential headers \
         in transit; use https:// or allow plain HTTP explicitly (Endpoint::allowing_http, \
         `--allow-http`)"
    )]
    PlainHttp {
        /// 1-based position of the URL.
        index: usize,
    },
    /// The client certificate or key is not PEM, or they do not fit together.
    #[error("invalid client certificate or key (expected PEM certificate chain and private key)")]
    InvalidClientIdentity,
}

impl Endpoint {
    /// An endpoint `id` delivering to `url`, signed with `secret` in `scheme`,
    /// with the default timeouts and no extra headers.
    ///
    /// ```
    /// use hookgate_core::Scheme;
    /// use hookgate_sender::Endpoint;
    /// let ep = Endpoint::new("orders", "https://example.com/hook", Scheme::StandardWebhooks,
    ///     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?
    ///     .with_header("X-Tenant", "acme")?
    ///     .with_timeout(std::time::Duration::from_secs(10))?;
    /// assert_eq!(ep.urls, ["https://example.com/hook"]);
    /// # Ok::<(), hookgate_sender::EndpointError>(())
    /// ```
    ///
    /// # Errors
    /// An invalid URL, a secret that does not parse for `scheme`, or an `id`
    /// that is a URL with userinfo, query or fragment
    /// ([`EndpointError::CredentialsInId`]).
    pub fn new(
        id: impl Into<String>,
        url: impl Into<String>,
        scheme: Scheme,
        secret: impl Into<String>,
    ) -> Result<Self, EndpointError> {
        let id = id.into();
        check_id(&id)?;
        let url = url.into();
        check_url(&url)?;
        let secret = secret.into();
        check_secret(scheme, &secret)?;
        Ok(Self {
            id,
            urls: vec![url],
            scheme,
            secrets: vec![secret],
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            headers: Vec::new(),
            disabled: false,
            breaker: BreakerConfig::default(),
            rate_limit: None,
            max_in_flight: None,
            health_url: None,
            tier: None,
            auto_disable: Some(AutoDisable::default()),
            allow_http: false,
            client_identity: None,
            previous_secrets: Vec::new(),
        })
    }

    /// An endpoint id for `url` that carries no credential:
    /// `scheme://host[:port]/path`, without userinfo, query or fragment (the
    /// host lower-cased, a default port dropped). Ids end up in queue keys,
    /// metric labels, spans and dead-letter listings, so a URL's
    /// `user:password@` and `?token=` must never be part of one.
    ///
    /// ```
    /// use hookgate_sender::Endpoint;
    /// assert_eq!(
    ///     Endpoint::id_from_url("https://user:pw@Example.COM:443/hooks/in?token=abc#x")?,
    ///     "https://example.com/hooks/in"
    /// );
    /// # Ok::<(), hookgate_sender::EndpointError>(())
    /// ```
    ///
    /// # Security
    /// The path is kept. Some providers put a secret in the path itself
    /// (Slack-style `/services/T../B../XXXX` URLs); give such endpoints an
    /// explicit id instead.
    ///
    /// # Errors
    /// [`EndpointError::InvalidUrl`] when `url` is not an `http`/`https` URL
    /// with a host.
    pub fn id_from_url(url: &str) -> Result<String, EndpointError> {
        let parsed = parse_url(url)?;
        let host = parsed.host_str().unwrap_or_default();
        Ok(match parsed.port() {
            Some(port) => format!("{}://{host}:{port}{}", parsed.scheme(), parsed.path()),
            None => format!("{}://{host}{}", parsed.scheme(), parsed.path()),
        })
    }

    /// Add a secret in front of the others (rotation: the newest signs first;
    /// Standard Webhooks and Stripe send a signature for each).
    ///
    /// # Errors
    /// The secret does not parse for the endpoint's scheme.
    pub fn with_secret(mut self, secret: impl Into<String>) -> Result<Self, EndpointError> {
        let secret = secret.into();
        check_secret(self.scheme, &secret)?;
        self.secrets.insert(0, secret);
        Ok(self)
    }

    /// Add a failover URL after the existing ones.
    ///
    /// # Errors
    /// The URL is invalid.
    pub fn with_url(mut self, url: impl Into<String>) -> Result<Self, EndpointError> {
        let url = url.into();
        check_url(&url)?;
        self.urls.push(url);
        Ok(self)
    }

    /// Total timeout per attempt (default 30 s).
    ///
    /// # Errors
    /// A zero duration.
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Self, EndpointError> {
        if timeout.is_zero() {
            return Err(EndpointError::ZeroTimeout("timeout"));
        }
        self.timeout = timeout;
        Ok(self)
    }

    /// Connect timeout per attempt (default 5 s).
    ///
    /// # Errors
    /// A zero duration.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Result<Self, EndpointError> {
        if timeout.is_zero() {
            return Err(EndpointError::ZeroTimeout("connect timeout"));
        }
        self.connect_timeout = timeout;
        Ok(self)
    }

    /// Send this header with every attempt. A `Content-Type` here replaces
    /// the default `application/json`; signature headers cannot be replaced.
    ///
    /// # Errors
    /// The name or value is not valid HTTP.
    pub fn with_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, EndpointError> {
        let (name, value) = (name.into(), value.into());
        check_header(&name, &value)?;
        self.headers.push((name, value));
        Ok(self)
    }

    /// Circuit-breaker thresholds for every URL (default: see [`BreakerConfig::default`]).
    #[must_use]
    pub fn with_breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }

    /// Limit deliveries to `limit`, adaptively, across every worker.
    #[must_use]
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// At most `n` attempts to this endpoint at once in one worker.
    ///
    /// # Errors
    /// A zero `n`.
    pub fn with_max_in_flight(mut self, n: u32) -> Result<Self, EndpointError> {
        if n == 0 {
            return Err(EndpointError::ZeroTimeout("max in flight"));
        }
        self.max_in_flight = Some(n);
        Ok(self)
    }

    /// Probe `url` with a GET while a breaker is open.
    ///
    /// # Errors
    /// The URL is invalid.
    pub fn with_health_url(mut self, url: impl Into<String>) -> Result<Self, EndpointError> {
        let url = url.into();
        check_url(&url)?;
        self.health_url = Some(url);
        Ok(self)
    }

    /// Apply `tier`'s preset: breaker thresholds, rate limit (when the
    /// preset has one), and its retry schedule and maximum age (used by the
    /// worker for this endpoint). Setters called afterwards override it.
    ///
    /// ```
    /// use hookgate_core::Scheme;
    /// use hookgate_sender::{breaker::BreakerConfig, tier::Tier, Endpoint};
    /// let ep = Endpoint::new("e", "https://example.com/", Scheme::GitHub, "s")?
    ///     .with_tier(Tier::BestEffort)
    ///     .with_breaker(BreakerConfig::default().with_failures(10)); // override one field
    /// assert_eq!(ep.breaker.failures, 10);
    /// assert_eq!(ep.rate_limit.unwrap().max_per_sec, 10.0);
    /// # Ok::<(), hookgate_sender::EndpointError>(())
    /// ```
    #[must_use]
    pub fn with_tier(mut self, tier: Tier) -> Self {
        let preset = tier.preset();
        self.breaker = preset.breaker;
        if preset.rate_limit.is_some() {
            self.rate_limit = preset.rate_limit;
        }
        self.tier = Some(tier);
        self
    }

    /// Disable after continuous failure per `rule`, or never (`None`).
    #[must_use]
    pub fn with_auto_disable(mut self, rule: Option<AutoDisable>) -> Self {
        self.auto_disable = rule;
        self
    }

    /// Allow (or refuse) plain `http://` URLs for this endpoint (default:
    /// refused, [`EndpointError::PlainHttp`]). For loopback tests, local
    /// development and receivers on a trusted network only.
    #[must_use]
    pub fn allowing_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// [`EndpointError::PlainHttp`] for the first `http://` URL, unless
    /// this endpoint allows plain HTTP. Workers check it before each
    /// delivery (their SSRF policy may allow plain HTTP for all endpoints);
    /// tools that register endpoints check it up front.
    ///
    /// ```
    /// use hookgate_core::Scheme;
    /// use hookgate_sender::{Endpoint, EndpointError};
    /// let ep = Endpoint::new("e", "http://127.0.0.1:8080/h", Scheme::GitHub, "s")?;
    /// assert!(matches!(ep.check_https(), Err(EndpointError::PlainHttp { index: 1 })));
    /// assert!(ep.allowing_http(true).check_https().is_ok());
    /// # Ok::<(), hookgate_sender::EndpointError>(())
    /// ```
    ///
    /// # Errors
    /// [`EndpointError::PlainHttp`].
    pub fn check_https(&self) -> Result<(), EndpointError> {
        if self.allow_http {
            return Ok(());
        }
        match self
            .urls
            .iter()
            .position(|u| parse_url(u).is_ok_and(|p| p.scheme() == "http"))
        {
            Some(i) => Err(EndpointError::PlainHttp { index: i + 1 }),
            None => Ok(()),
        }
    }

    /// Present `identity` to the receiver (mTLS).
    #[must_use]
    pub fn with_client_identity(mut self, identity: ClientIdentity) -> Self {
        self.client_identity = Some(identity);
        self
    }

    /// Rotate to `new`: every current secret keeps signing until
    /// `expires_at_ms` (Unix milliseconds) as a [`PreviousSecret`], and
    /// `new` becomes the only current one. Previous secrets that already
    /// expire earlier keep their expiry.
    ///
    /// Rotate the **receiver first** (give it the new secret beside the
    /// old), then the sender. Schemes that send several signatures
    /// (Standard Webhooks, Stripe) sign with the new secret and every
    /// unexpired previous one, so a receiver holding either verifies during
    /// the grace period. Schemes with one signature (GitHub, Slack,
    /// Shopify) keep signing with the previous secret until it expires and
    /// switch to the new one at that instant; see
    /// [`signing_secrets`](Self::signing_secrets).
    ///
    /// ```
    /// use hookgate_core::Scheme;
    /// use hookgate_sender::Endpoint;
    /// let ep = Endpoint::new("e", "https://example.com/", Scheme::GitHub, "old")?
    ///     .rotate_secret("new", 2_000)?;
    /// assert_eq!(ep.signing_secrets(1_999), ["old"]); // one signature: switch at expiry
    /// assert_eq!(ep.signing_secrets(2_000), ["new"]);
    /// # Ok::<(), hookgate_sender::EndpointError>(())
    /// ```
    ///
    /// # Errors
    /// `new` does not parse for the endpoint's scheme.
    pub fn rotate_secret(
        mut self,
        new: impl Into<String>,
        expires_at_ms: i64,
    ) -> Result<Self, EndpointError> {
        let new = new.into();
        check_secret(self.scheme, &new)?;
        let current = std::mem::replace(&mut self.secrets, vec![new]);
        let mut previous: Vec<PreviousSecret> = current
            .into_iter()
            .map(|secret| PreviousSecret::new(secret, expires_at_ms))
            .collect();
        previous.extend(
            self.previous_secrets
                .drain(..)
                .map(|p| PreviousSecret::new(p.secret, p.expires_at_ms.min(expires_at_ms))),
        );
        self.previous_secrets = previous;
        Ok(self)
    }

    /// The secrets that sign at `now_ms` (Unix milliseconds), in order.
    ///
    /// - Schemes with several signatures per request (Standard Webhooks,
    ///   Stripe): every current secret, then every previous secret not yet
    ///   expired.
    /// - Schemes with one signature: the previous secret that expires last,
    ///   while one is unexpired (the receiver may not have the new one
    ///   yet); after that, the first current secret.
    #[must_use]
    pub fn signing_secrets(&self, now_ms: i64) -> Vec<&str> {
        let live = self
            .previous_secrets
            .iter()
            .filter(|p| p.expires_at_ms > now_ms);
        if self.scheme.multi_signature() {
            self.secrets
                .iter()
                .map(String::as_str)
                .chain(live.map(|p| p.secret.as_str()))
                .collect()
        } else {
            match live.max_by_key(|p| p.expires_at_ms) {
                Some(p) => vec![p.secret.as_str()],
                None => self.secrets.iter().take(1).map(String::as_str).collect(),
            }
        }
    }

    /// Check every setting (for endpoints built field by field or loaded from a store).
    ///
    /// # Errors
    /// The first invalid setting.
    pub fn validate(&self) -> Result<(), EndpointError> {
        if self.urls.is_empty() {
            return Err(EndpointError::NoUrl);
        }
        for url in &self.urls {
            check_url(url)?;
        }
        if self.secrets.is_empty() {
            return Err(EndpointError::NoSecret);
        }
        for secret in &self.secrets {
            check_secret(self.scheme, secret)?;
        }
        for previous in &self.previous_secrets {
            check_secret(self.scheme, &previous.secret)?;
        }
        if let Some(identity) = &self.client_identity {
            identity.to_reqwest()?;
        }
        for (name, value) in &self.headers {
            check_header(name, value)?;
        }
        if self.timeout.is_zero() {
            return Err(EndpointError::ZeroTimeout("timeout"));
        }
        if self.connect_timeout.is_zero() {
            return Err(EndpointError::ZeroTimeout("connect timeout"));
        }
        if let Some(url) = &self.health_url {
            check_url(url)?;
        }
        Ok(())
    }
}

pub(crate) fn parse_url(url: &str) -> Result<reqwest::Url, EndpointError> {
    // The parser's messages never quote the input.
    let parsed = reqwest::Url::parse(url).map_err(|e| EndpointError::InvalidUrl(format!("{e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(EndpointError::InvalidUrl(format!(
            "scheme {:?} is not http or https",
            parsed.scheme()
        )));
    }
    if parsed.host().is_none() {
        return Err(EndpointError::InvalidUrl("no host".into()));
    }
    Ok(parsed)
}

/// Refuse an id that is a URL carrying userinfo, a query or a fragment.
/// Only at construction: endpoints already stored under such an id still
/// deliver.
fn check_id(id: &str) -> Result<(), EndpointError> {
    match reqwest::Url::parse(id) {
        Ok(u)
            if u.has_host()
                && (!u.username().is_empty()
                    || u.password().is_some()
                    || u.query().is_some()
                    || u.fragment().is_some()) =>
        {
            Err(EndpointError::CredentialsInId)
        }
        _ => Ok(()),
    }
}

fn check_url(url: &str) -> Result<(), EndpointError> {
    parse_url(url).map(drop)
}

fn check_secret(scheme: Scheme, secret: &str) -> Result<(), EndpointError> {
    let invalid = |source| EndpointError::InvalidSecret {
        scheme: scheme.name(),
        source,
    };
    let key = scheme.secret(secret).map_err(invalid)?;
    // A sender signs: an ed25519 public key (`whpk_`, Discord's hex key) cannot.
    if !key.can_sign() {
        return Err(invalid(hookgate_core::ConfigError::PublicKeyCannotSign));
    }
    Ok(())
}

fn check_header(name: &str, value: &str) -> Result<(), EndpointError> {
    let ok = http::HeaderName::from_bytes(name.as_bytes()).is_ok()
        && http::HeaderValue::from_str(value).is_ok();
    if ok {
        Ok(())
    } else {
        Err(EndpointError::InvalidHeader(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_settings() {
        let ok = Endpoint::new("e", "https://example.com/", Scheme::GitHub, "s").unwrap();
        assert!(ok.validate().is_ok());
        assert!(matches!(
            Endpoint::new("e", "ftp://example.com/", Scheme::GitHub, "s"),
            Err(EndpointError::InvalidUrl(_))
        ));
        assert!(matches!(
            Endpoint::new("e", "not a url", Scheme::GitHub, "s"),
            Err(EndpointError::InvalidUrl(_))
        ));
        let err = Endpoint::new(
            "e",
            "https://x.test/",
            Scheme::StandardWebhooks,
            "whsec_!!!",
        )
        .unwrap_err();
        assert!(matches!(err, EndpointError::InvalidSecret { .. }));
        assert!(!err.to_string().contains("!!!"));
        assert!(ok.clone().with_header("bad header", "v").is_err());
        assert!(ok.clone().with_header("x-ok", "line\nbreak").is_err());
        assert!(ok.clone().with_timeout(Duration::ZERO).is_err());
        let rotated = ok.with_secret("new").unwrap();
        assert_eq!(rotated.secrets, ["new", "s"]);
        assert!(!format!("{rotated:?}").contains("new"));
    }

    #[test]
    fn debug_masks_url_credentials_and_header_values() {
        let ep = Endpoint::new(
            "e",
            "https://u:hunter2@example.com/p?token=tok3n&sig=s1g#fr4g",
            Scheme::GitHub,
            "s3cret",
        )
        .unwrap()
        .with_url("https://apik3y@backup.example.com/")
        .unwrap()
        .with_header("Authorization", "Bearer b34rer")
        .unwrap()
        .with_header("X-Api-Key", "k3y")
        .unwrap();
        let dbg = format!("{ep:?}");
        for secret in [
            "hunter2", "tok3n", "s1g", "fr4g", "apik3y", "b34rer", "k3y", "s3cret",
        ] {
            assert!(!dbg.contains(secret), "{secret} in {dbg}");
        }
        assert!(
            dbg.contains("https://***@example.com/p?token=***&sig=***#***"),
            "{dbg}"
        );
        assert!(dbg.contains(r#"("Authorization", <redacted>)"#), "{dbg}");
        let alt = format!("{ep:#?}");
        assert!(!alt.contains("b34rer") && !alt.contains("hunter2"), "{alt}");
    }

    #[test]
    fn ids_from_urls_carry_no_credentials() {
        for (url, want) in [
            ("https://example.com/hook", "https://example.com/hook"),
            (
                "https://u:pw@example.com/hook?token=x#f",
                "https://example.com/hook",
            ),
            (
                "http://user@127.0.0.1:8080/a/b?c=d",
                "http://127.0.0.1:8080/a/b",
            ),
            ("https://EXAMPLE.com:443", "https://example.com/"),
            ("http://[::1]:9000/h?x", "http://[::1]:9000/h"),
            ("https://u:p@ss@example.com/h", "https://example.com/h"),
        ] {
            assert_eq!(Endpoint::id_from_url(url).unwrap(), want, "{url}");
        }
        assert!(matches!(
            Endpoint::id_from_url("ftp://x/"),
            Err(EndpointError::InvalidUrl(_))
        ));
        let err = Endpoint::id_from_url("https://u:SECRET@exa mple.com/").unwrap_err();
        assert!(!err.to_string().contains("SECRET"), "{err}");
    }

    #[test]
    fn ids_that_are_urls_with_credentials_are_refused() {
        for id in [
            "https://u:SECRET@example.com/hook",
            "https://SECRET@example.com/hook",
            "https://example.com/hook?token=SECRET",
            "https://example.com/hook#SECRET",
        ] {
            let err =
                Endpoint::new(id, "https://example.com/hook", Scheme::GitHub, "s").unwrap_err();
            assert!(matches!(err, EndpointError::CredentialsInId), "{id}");
            assert!(!err.to_string().contains("SECRET"));
        }
        for id in [
            "orders",
            "https://example.com/hook",
            "tenant:42/orders",
            "a@b",
        ] {
            assert!(
                Endpoint::new(id, "https://example.com/hook", Scheme::GitHub, "s").is_ok(),
                "{id}"
            );
        }
    }

    #[test]
    fn ed25519_signing_keys_are_taken_and_public_keys_refused() {
        let sk = hookgate_core::Secret::ed25519_signing_key([3; 32]);
        let whsk = sk.to_standard_string();
        let whpk = sk.public_key_string().unwrap();
        assert!(Endpoint::new(
            "e",
            "https://example.com/",
            Scheme::StandardWebhooks,
            whsk.as_str()
        )
        .is_ok());
        assert!(Endpoint::new("e", "https://example.com/", Scheme::Discord, whsk.as_str()).is_ok());
        for scheme in [Scheme::StandardWebhooks, Scheme::Discord] {
            assert!(matches!(
                Endpoint::new("e", "https://example.com/", scheme, whpk.as_str()),
                Err(EndpointError::InvalidSecret {
                    source: hookgate_core::ConfigError::PublicKeyCannotSign,
                    ..
                })
            ));
        }
    }
}
