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
//! - A claim's **token owns the key** from the claim until the key is
//!   completed, released or taken by a newer claim — whether its lease has
//!   expired or not. [`complete`](DedupStore::complete),
//!   [`release`](DedupStore::release) and [`renew`](DedupStore::renew) act
//!   whenever the token still owns the key, and report whether they did. A
//!   newer live claim, or a done record, fences the old token out: they
//!   then return `false` and change nothing, so a handler
//!   whose lease expired and was re-claimed cannot overwrite the newer claim.
//! - The layer **renews** the lease every third of it while the handler runs,
//!   so a slow but live handler keeps its claim; a lease only runs out when
//!   the process (or its path to the store) is gone for longer than the
//!   lease.
//! - A key is **free** when it holds nothing, an expired claim or a done
//!   record past its retention: exactly what `claim` would take. A backend
//!   may forget an expired claim (Redis drops the key when the lease ends;
//!   the memory store purges expired entries as claims arrive), so a token
//!   cannot always tell its own expired claim from a free key. Therefore
//!   `complete` also succeeds on a free key (it records the outcome, in one
//!   atomic step, as if the token had claimed it again): the handler did
//!   run, and nothing newer is there to protect. `release` and `renew` on a
//!   free key do nothing and return `false` (there is no claim to drop, and
//!   `renew` does not know the body digest a fresh claim needs); after a
//!   failed renewal the layer still completes.
//! - A done record keeps the handler's status, the digest of the body and
//!   the start of the response ([`DoneRecord::body`], at most
//!   [`DoneRecord::MAX_BODY`] bytes, with its content type), so a replay
//!   answers what the handler answered.
//! - Every backend uses its own clock for leases and retention (Redis and
//!   Postgres: the server's), never the receivers', so replicas with skewed
//!   clocks agree.
//! - Keys arrive already namespaced (`prefix:scheme:id`); a backend may add
//!   its own prefix but must not otherwise interpret them.
//!
//! # Implementing a store
//! Keep atomicity inside the backend (a single `SET NX`, a single
//! `INSERT .. ON CONFLICT`, a compare-and-set script). Map "cannot reach the
//! backend" (refused, reset, timed out) to [`StoreErrorKind::Unavailable`];
//! the layer answers 503 with `Retry-After` for it. After a call times out,
//! do not hand the same connection out again (it may have gone silent
//! without closing): replace it. Map "the backend is set up wrongly" (a
//! missing table, a key holding a value the store did not write) to
//! [`StoreErrorKind::Config`]; the layer answers 500 for it and logs it at
//! `error` level, even when fail-open is on. Run the conformance suite
//! (`crates/hookgate-tower/tests/store_conformance.rs`: one generic set of
//! cases, instantiated per store by a macro) against your store.

use bytes::Bytes;
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
///
/// ```
/// use hookgate_tower::store::DoneRecord;
///
/// let record = DoneRecord::new(200, [0; 32])
///     .with_body(Some("application/json".into()), r#"{"ok":true}"#.into());
/// assert_eq!(&record.body[..], br#"{"ok":true}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoneRecord {
    /// HTTP status the handler returned (by default 2xx, or a 4xx other than
    /// 408/409/425/429).
    pub status: u16,
    /// Digest of the request body that was handled.
    pub digest: Digest,
    /// The `Content-Type` of the handler's response, if any (at most
    /// [`DoneRecord::MAX_CONTENT_TYPE`] bytes).
    pub content_type: Option<String>,
    /// The handler's response body, at most [`DoneRecord::MAX_BODY`] bytes
    /// (empty when it answered none, or a larger or streamed one).
    pub body: Bytes,
}

impl DoneRecord {
    /// Most response-body bytes a done record keeps (4 KiB).
    pub const MAX_BODY: usize = 4096;
    /// Longest content type a done record keeps.
    pub const MAX_CONTENT_TYPE: usize = 255;

    /// A record of `status` for the body with `digest`, without a response
    /// body.
    #[must_use]
    pub fn new(status: u16, digest: Digest) -> Self {
        Self {
            status,
            digest,
            content_type: None,
            body: Bytes::new(),
        }
    }

    /// Keep the response's content type and body; a body longer than
    /// [`Self::MAX_BODY`] is cut to it, a content type longer than
    /// [`Self::MAX_CONTENT_TYPE`] (or not visible ASCII) is dropped.
    #[must_use]
    pub fn with_body(mut self, content_type: Option<String>, mut body: Bytes) -> Self {
        body.truncate(Self::MAX_BODY);
        self.body = body;
        self.content_type = content_type.filter(|c| {
            c.len() <= Self::MAX_CONTENT_TYPE && c.bytes().all(|b| (0x20..0x7f).contains(&b))
        });
        self
    }
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
    /// The backend answered with an error that is neither "unreachable" nor
    /// "misconfigured" (an unexpected reply, a failed statement). Receivers
    /// answer 503 + `Retry-After`, as for [`Unavailable`](Self::Unavailable).
    Backend,
    /// The store is set up wrongly: a malformed URL or an invalid table
    /// name when building it; per request, a missing table or a key holding
    /// a value the store did not write. Receivers answer 500 and log it at
    /// `error` level (never fail-open): retrying will not help until an
    /// operator fixes it.
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

    /// Turn the claim owned by `token` (expired or not) into a done record
    /// kept for `retention`. Also records it when the key is free (see the
    /// [module docs](self)). Returns `false` (and changes nothing) once a
    /// newer claim or a done record holds the key.
    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        record: DoneRecord,
        retention: Duration,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Drop the claim owned by `token` (expired or not), so a retry can take
    /// the key at once. Returns `false` (and changes nothing) if `token` no
    /// longer owns it.
    fn release<'a>(&'a self, key: &'a str, token: &'a ClaimToken) -> BoxFuture<'a, Result<bool>>;

    /// Extend the claim owned by `token` (expired or not) to end `lease`
    /// from now (the backend's clock). Returns `false` (and changes nothing)
    /// if `token` no longer owns the key, including when the backend has
    /// forgotten the expired claim.
    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool>>;
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

    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        (**self).renew(key, token, lease)
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

    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        (**self).renew(key, token, lease)
    }
}
