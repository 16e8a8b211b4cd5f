//! A verifying, deduplicating webhook receiver on AWS Lambda: the same
//! [`VerifyWebhookLayer`] as an axum or hyper service, in front of a
//! `lambda_http` handler.
//!
//! ```text
//! HOOKGATE_SCHEME=standard HOOKGATE_SECRET=whsec_... HOOKGATE_STORE=redis://my-cache:6379 \
//!   lambda-receiver            # on Lambda: the bootstrap binary (cargo lambda build --release)
//! ```
//!
//! - **The store must be shared.** Lambda runs each concurrent invocation
//!   in an execution environment of its own, and recycles environments at
//!   will: a retried delivery usually lands in another one. Only a store
//!   every environment reaches (Redis, e.g. ElastiCache, or Postgres, e.g.
//!   RDS) catches it; the memory store is refused ([`ConfigError::MemoryStore`]).
//! - **Connections are reused across invocations.** The store (a Redis
//!   connection manager, or a Postgres pool of two connections) is built
//!   once at cold start, in [`Config::connect`], and every invocation the
//!   environment serves uses it; only a cold start connects.
//! - **The outcome is recorded before the response.** The layer waits for
//!   `complete`/`release` before it answers, so nothing is left running
//!   when Lambda freezes the environment after the response.
//!
//! The handler here acknowledges and logs the event; put your own in
//! [`handle`]'s place. [`receiver`] builds the service for any store, so
//! tests drive it with `lambda_http::Request` values and no cloud access.
#![forbid(unsafe_code)]

use std::time::Duration;

use bytes::Bytes;
use hookgate::{
    tower::{DedupStore, PostgresStore, RedisStore, VerifiedWebhook, VerifyWebhookLayer},
    Scheme, Verifier,
};
use http_body_util::Full;
use lambda_http::{http::Request, Response};

/// What the receiver is configured with, from the environment.
#[derive(Clone)]
pub struct Config {
    /// The scheme (`HOOKGATE_SCHEME`, default `standard`).
    pub scheme: Scheme,
    /// Secrets, newest first (`HOOKGATE_SECRET`, several separated by spaces).
    pub secrets: Vec<String>,
    /// The shared store (`HOOKGATE_STORE`: `redis://`, `rediss://`, `postgres://`).
    pub store: String,
    /// Dedup key prefix (`HOOKGATE_NAMESPACE`, default `hookgate`).
    pub namespace: String,
    /// Timestamp tolerance (`HOOKGATE_TOLERANCE_SECS`, default 300).
    pub tolerance: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("scheme", &self.scheme)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("store", &"<redacted>")
            .field("namespace", &self.namespace)
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

/// Why the receiver cannot start.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// `HOOKGATE_STORE` names the memory store, or is not set.
    MemoryStore,
    /// `HOOKGATE_STORE` is neither Redis nor Postgres.
    UnknownStore,
    /// `HOOKGATE_SECRET` is not set.
    NoSecret,
    /// A setting is invalid.
    Invalid(&'static str),
    /// The scheme or a secret is invalid.
    Scheme(hookgate::core::ConfigError),
    /// The store could not be reached or set up.
    Store(hookgate::tower::store::StoreError),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MemoryStore => f.write_str(
                "HOOKGATE_STORE must name a shared store (redis://, rediss:// or postgres://): \
                 the memory store is per execution environment, and Lambda runs concurrent and \
                 retried invocations in different ones, so duplicates would not be caught",
            ),
            Self::UnknownStore => {
                f.write_str("HOOKGATE_STORE must start with redis://, rediss:// or postgres://")
            }
            Self::NoSecret => f.write_str("set HOOKGATE_SECRET (several separated by spaces)"),
            Self::Invalid(what) => write!(f, "invalid setting: {what}"),
            Self::Scheme(e) => write!(f, "invalid scheme or secret: {e}"),
            Self::Store(e) => write!(f, "the store is not usable: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Scheme(e) => Some(e),
            Self::Store(e) => Some(e),
            _ => None,
        }
    }
}

/// Which shared store a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// `redis://` or `rediss://`.
    Redis,
    /// `postgres://` or `postgresql://`.
    Postgres,
}

impl StoreKind {
    /// The kind of store `url` names.
    ///
    /// # Errors
    /// [`ConfigError::MemoryStore`] for `memory` (or an empty value): it
    /// cannot deduplicate across Lambda's execution environments;
    /// [`ConfigError::UnknownStore`] for anything else.
    pub fn of(url: &str) -> Result<Self, ConfigError> {
        let url = url.trim();
        let lower = url.to_ascii_lowercase();
        if lower.is_empty() || lower == "memory" || lower.starts_with("memory:") {
            return Err(ConfigError::MemoryStore);
        }
        if lower.starts_with("redis://") || lower.starts_with("rediss://") {
            return Ok(Self::Redis);
        }
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return Ok(Self::Postgres);
        }
        Err(ConfigError::UnknownStore)
    }
}

impl Config {
    /// Read the configuration from the environment (see the fields).
    ///
    /// # Errors
    /// A missing secret or store, the memory store, an invalid scheme.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) with another source of variables.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let scheme: Scheme = get("HOOKGATE_SCHEME")
            .as_deref()
            .unwrap_or("standard")
            .parse()
            .map_err(ConfigError::Scheme)?;
        let secrets: Vec<String> = get("HOOKGATE_SECRET")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if secrets.is_empty() {
            return Err(ConfigError::NoSecret);
        }
        let store = get("HOOKGATE_STORE").unwrap_or_default();
        StoreKind::of(&store)?;
        let tolerance = match get("HOOKGATE_TOLERANCE_SECS") {
            Some(v) => Duration::from_secs(
                v.trim()
                    .parse()
                    .map_err(|_| ConfigError::Invalid("HOOKGATE_TOLERANCE_SECS"))?,
            ),
            None => hookgate::core::DEFAULT_TOLERANCE,
        };
        Ok(Self {
            scheme,
            secrets,
            store,
            namespace: get("HOOKGATE_NAMESPACE").unwrap_or_else(|| "hookgate".to_owned()),
            tolerance,
        })
    }

    /// The verifier for the scheme and secrets.
    ///
    /// # Errors
    /// [`ConfigError::Scheme`] for an invalid secret.
    pub fn verifier(&self) -> Result<Verifier, ConfigError> {
        Verifier::from_secret_strings(self.scheme, &self.secrets)
            .map(|v| v.with_tolerance(self.tolerance))
            .map_err(ConfigError::Scheme)
    }
}

/// The handler behind the layer: runs once per verified, first-seen event.
/// Replace it with your own; answer 2xx when done, 5xx to have the sender
/// retry (the claim is released).
///
/// # Errors
/// Never; the signature leaves room for a handler that fails.
pub async fn handle(
    req: Request<Full<Bytes>>,
) -> Result<Response<Full<Bytes>>, lambda_http::Error> {
    let webhook = req.extensions().get::<VerifiedWebhook>().cloned();
    let Some(webhook) = webhook else {
        // Only reachable without the layer: refuse rather than trust.
        let mut res = Response::new(Full::new(Bytes::from_static(b"not verified")));
        *res.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        return Ok(res);
    };
    tracing::info!(scheme = %webhook.scheme, id = ?webhook.id, "webhook received");
    let body = serde_json::json!({ "received": webhook.id }).to_string();
    let mut res = Response::new(Full::new(Bytes::from(body)));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(res)
}

/// The service Lambda runs: the verifying, deduplicating layer over
/// [`handle`], on `store`. Clone it freely: clones share the store's
/// connections.
pub fn receiver<S: DedupStore>(
    verifier: Verifier,
    store: S,
    namespace: &str,
) -> impl tower::Service<
    lambda_http::Request,
    Response = Response<hookgate::tower::ResponseBody<Full<Bytes>>>,
    Error = lambda_http::Error,
    Future = impl Send,
> + Clone
       + Send {
    tower::ServiceBuilder::new()
        .layer(
            VerifyWebhookLayer::new(verifier)
                .with_store(store)
                .with_prefix(namespace),
        )
        .service_fn(handle)
}

/// A connected store, built once per cold start.
pub enum Store {
    /// Redis.
    Redis(RedisStore),
    /// Postgres (its table is created on connect if missing).
    Postgres(PostgresStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Redis(_) => "Store::Redis",
            Self::Postgres(_) => "Store::Postgres",
        })
    }
}

impl Config {
    /// Connect to the shared store, once, at cold start. Postgres gets a
    /// pool of two connections: one invocation at a time runs in an
    /// environment, and the layer's lease renewal may overlap its claim.
    ///
    /// # Errors
    /// [`ConfigError::MemoryStore`], [`ConfigError::UnknownStore`], or
    /// [`ConfigError::Store`] when it cannot be reached or set up.
    pub async fn connect(&self) -> Result<Store, ConfigError> {
        match StoreKind::of(&self.store)? {
            StoreKind::Redis => RedisStore::connect(&self.store)
                .await
                .map(Store::Redis)
                .map_err(ConfigError::Store),
            StoreKind::Postgres => {
                let store = PostgresStore::new(&self.store)
                    .map_err(ConfigError::Store)?
                    .with_pool_size(2);
                store.migrate().await.map_err(ConfigError::Store)?;
                Ok(Store::Postgres(store))
            }
        }
    }
}
