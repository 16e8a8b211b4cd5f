//! Shared Postgres and Redis plumbing for hookgate's dedup stores
//! (`hookgate-tower`) and queues (`hookgate-sender`), so both read
//! connection URLs, speak TLS, size pools and classify errors the same way.
//!
//! - [`postgres`] (feature `postgres`): [`postgres::PgUrl`] reads URLs and
//!   libpq key=value strings including `sslmode` (`disable`, `prefer`,
//!   `require`, `verify-ca`, `verify-full`) and `sslrootcert`, and builds
//!   deadpool pools over rustls; [`postgres::classify`] maps SQLSTATEs to an
//!   [`ErrorClass`]; [`postgres::valid_identifier`] is the one rule for
//!   table and schema names.
//! - [`redis`] (feature `redis`): [`redis::client`] for `redis://` and
//!   `rediss://` with the system's or a given CA; [`redis::classify`].
//! - [`tls`] (feature `tls`): the rustls client configurations behind both.
//!
//! An application does not need this crate directly: the stores and queues
//! take URLs and use it underneath.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;

/// What a backend error means for whoever called the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The server cannot be reached or cannot answer now (network, timeout,
    /// overload, restart): try again later — a receiver answers 503.
    Unavailable,
    /// Reached, but set up wrongly (missing table, authentication, TLS
    /// check failed, foreign data): retrying will not help — log loudly,
    /// answer 500, never fail open.
    Misconfigured,
    /// Any other error the server returned.
    Other,
}

/// A connection string or TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The URL or connection string is malformed or contradictory. The
    /// message never repeats the string, which may hold a password.
    #[error("invalid store URL: {0}")]
    InvalidUrl(String),
    /// The TLS settings cannot be used (unreadable CA file, no roots).
    #[error("{message}")]
    Tls {
        /// What went wrong.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl BackendError {
    #[cfg(feature = "tls")]
    fn tls(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Tls {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}
