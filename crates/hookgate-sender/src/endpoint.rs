//! Endpoints: where messages go.

use std::time::Duration;

use hookgate_core::Scheme;

/// Default connect timeout per attempt.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default total timeout per attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A receiver: URL(s), signing scheme and secrets, timeouts, extra headers.
///
/// Endpoints are stored in the queue (so `hookgate dlq replay` can deliver
/// without the original program). `Debug` redacts the secrets and any
/// password in the URLs.
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
    /// Set when the receiver answered `410 Gone`; nothing is sent while set.
    pub disabled: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field(
                "urls",
                &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>(),
            )
            .field("scheme", &self.scheme)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("headers", &self.headers)
            .field("disabled", &self.disabled)
            .finish()
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
    /// An invalid URL or a secret that does not parse for `scheme`.
    pub fn new(
        id: impl Into<String>,
        url: impl Into<String>,
        scheme: Scheme,
        secret: impl Into<String>,
    ) -> Result<Self, EndpointError> {
        let url = url.into();
        check_url(&url)?;
        let secret = secret.into();
        check_secret(scheme, &secret)?;
        Ok(Self {
            id: id.into(),
            urls: vec![url],
            scheme,
            secrets: vec![secret],
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            headers: Vec::new(),
            disabled: false,
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
        for (name, value) in &self.headers {
            check_header(name, value)?;
        }
        if self.timeout.is_zero() {
            return Err(EndpointError::ZeroTimeout("timeout"));
        }
        if self.connect_timeout.is_zero() {
            return Err(EndpointError::ZeroTimeout("connect timeout"));
        }
        Ok(())
    }
}

pub(crate) fn parse_url(url: &str) -> Result<reqwest::Url, EndpointError> {
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

fn check_url(url: &str) -> Result<(), EndpointError> {
    parse_url(url).map(drop)
}

fn check_secret(scheme: Scheme, secret: &str) -> Result<(), EndpointError> {
    scheme
        .secret(secret)
        .map(drop)
        .map_err(|source| EndpointError::InvalidSecret {
            scheme: scheme.name(),
            source,
        })
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

/// `url` with any password replaced by `***`, for records and logs.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
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
    fn debug_redacts_url_passwords() {
        let ep = Endpoint::new("e", "https://u:hunter2@example.com/", Scheme::GitHub, "s").unwrap();
        let dbg = format!("{ep:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("u:***@example.com"), "{dbg}");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("https://u:hunter2@example.com/x"),
            "https://u:***@example.com/x"
        );
        assert_eq!(redact_url("https://example.com/x"), "https://example.com/x");
    }
}
