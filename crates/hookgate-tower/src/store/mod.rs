//! Deduplication stores: where the layer claims event ids.
//!
//! A [`DedupStore`] keeps, per key, either an in-flight **claim** (with a
//! lease and a fencing token) or a **done** record (the handler's status,
//! kept for a retention period). The contract every backend follows:
//!
//! - [`claim`](DedupStore::claim) is one atomic step: it takes a free or
//!   expired key and returns [`Claim::Acquired`] with a fresh token, or
//!   reports [`Claim::InFlight`] (someone else holds an unexpired lease) or
//!   [`Claim::Done`]. Never check-then-insert.
//! - [`complete`](DedupStore::complete) and [`release`](DedupStore::release)
//!   act only while the token still owns the claim, and report whether they
//!   did. A handler whose lease expired and was re-claimed cannot overwrite
//!   the newer claim. Ownership ends with the lease even if nobody has
//!   re-claimed the key yet (Redis has dropped the key by then): a handler
//!   that outlives its lease gets `false` from `complete`, and the next
//!   delivery runs it again. Choose the lease above the handler's worst
//!   case.
//! - Every backend uses its own clock for leases and retention (Redis and
//!   Postgres: the server's), never the receivers', so replicas with skewed
//!   clocks agree.
//! - Keys arrive already namespaced (`prefix:scheme:id`); a backend may add
//!   its own prefix but must not otherwise interpret them.
//!
//! # Implementing a store
//! Keep atomicity inside the backend (a single `SET NX`, a single
//! `INSERT .. ON CONFLICT`, a compare-and-set script). Map "cannot reach the
//! backend" to [`StoreErrorKind::Unavailable`]; the layer answers 503 with
//! `Retry-After` for it. Run the conformance suite
//! (`crates/hookgate-tower/tests/store_conformance.rs`: one generic set of
//! cases, instantiated per store by a macro) against your store.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

pub mod memory;
pub use memory::MemoryStore;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
#[cfg(feature = "redis")]
pub use self::redis::RedisStore;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "postgres")]
pub use self::postgres::PostgresStore;

/// A boxed future, as the store methods return (keeps [`DedupStore`] usable as
/// `dyn DedupStore`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// SHA-256 of a request body, kept with each claim to spot an id reused for a
/// different body.
pub type Digest = [u8; 32];

/// A fencing token: proof of owning one claim. Random, unique per claim.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClaimToken(String);

impl ClaimToken {
    /// A fresh random token.
    #[must_use]
    pub fn generate() -> Self {
        Self(format!("{:032x}", rand::random::<u128>()))
    }

    /// Rebuild a token from its string form (for backends).
    #[must_use]
    pub fn from_string(token: String) -> Self {
        Self(token)
    }

    /// The token's string form.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClaimToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClaimToken({})", &self.0)
    }
}

/// What a completed event's handler answered, stored for its retention period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoneRecord {
    /// HTTP status the handler returned (2xx, or a 4xx other than 408/429).
    pub status: u16,
    /// Digest of the body that was handled.
    pub digest: Digest,
}

/// Outcome of [`DedupStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free (or its lease had expired): the caller owns it now.
    Acquired(ClaimToken),
    /// Another claim holds an unexpired lease.
    InFlight {
        /// Time left on that lease.
        remaining: Duration,
        /// Digest stored with that claim.
        digest: Digest,
    },
    /// The event was handled already.
    Done(DoneRecord),
}

/// Class of a [`StoreError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The backend could not be reached (connection refused, timed out, pool
    /// exhausted). Receivers answer 503 + `Retry-After`.
    Unavailable,
    /// The backend answered with an error or with data it should not hold.
    Backend,
    /// The store was set up wrongly (a malformed URL, an invalid table
    /// name); reported when building it, not per request.
    Config,
}

/// A store failed. Boxes the backend's own error as its [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[error("dedup store {kind_str}: {message}", kind_str = self.kind_str())]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// A new error of `kind`.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the backend error that caused this one.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The error's class.
    #[must_use]
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    fn kind_str(&self) -> &'static str {
        match self.kind {
            StoreErrorKind::Unavailable => "unavailable",
            StoreErrorKind::Backend => "error",
            StoreErrorKind::Config => "configuration error",
        }
    }
}

/// Where the layer claims event ids. See the [module docs](self) for the contract.
pub trait DedupStore: Send + Sync + 'static {
    /// Atomically claim `key` for `lease`, remembering `digest` with the claim.
    fn claim<'a>(
        &'a self,
        key: &'a str,
        digest: &'a Digest,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim>>;

    /// Turn the claim owned by `token` into a done record kept for
    /// `retention`. Returns `false` (and changes nothing) if `token` no
    /// longer owns the claim.
    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        record: DoneRecord,
        retention: Duration,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Drop the claim owned by `token`, so a retry can take the key at once.
    /// Returns `false` (and changes nothing) if `token` no longer owns it.
    fn release<'a>(&'a self, key: &'a str, token: &'a ClaimToken) -> BoxFuture<'a, Result<bool>>;
}

impl<T: DedupStore + ?Sized> DedupStore for Arc<T> {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        digest: &'a Digest,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim>> {
        (**self).claim(key, digest, lease)
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        record: DoneRecord,
        retention: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        (**self).complete(key, token, record, retention)
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a ClaimToken) -> BoxFuture<'a, Result<bool>> {
        (**self).release(key, token)
    }
}

impl<T: DedupStore + ?Sized> DedupStore for Box<T> {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        digest: &'a Digest,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim>> {
        (**self).claim(key, digest, lease)
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        record: DoneRecord,
        retention: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        (**self).complete(key, token, record, retention)
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a ClaimToken) -> BoxFuture<'a, Result<bool>> {
        (**self).release(key, token)
    }
}
