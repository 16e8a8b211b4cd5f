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
/// without the original program). `Debug` redacts the secrets.
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
            .field("urls", &self.urls)
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
