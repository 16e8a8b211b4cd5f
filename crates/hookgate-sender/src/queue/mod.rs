//! Queue and dead-letter storage.
//!
//! One [`Queue`] trait, three backends: memory, Postgres (feature
//! `postgres`) and Redis (feature `redis`). A *delivery* is one message to one
//! endpoint, identified by a [`DeliveryKey`]. The contract:
//!
//! - [`enqueue`](Queue::enqueue) returns only once the delivery is durably
//!   stored (for the memory queue: in memory), due now. Enqueueing the same key
//!   twice is a no-op.
//! - [`lease`](Queue::lease) atomically takes up to `max` due deliveries whose
//!   lease is free or expired, and gives each a fresh [`LeaseToken`]. Many
//!   workers may lease concurrently; no delivery is leased twice at once.
//! - [`retry_later`](Queue::retry_later), [`delivered`](Queue::delivered),
//!   [`dead_letter`](Queue::dead_letter) and [`release`](Queue::release) act
//!   only while the token still owns the lease, and return whether they did.
//! - Every attempt is recorded with the delivery and kept in its dead letter.
//! - Dead-letter listing is paged; nothing loads the whole queue or DLQ.

use std::{future::Future, pin::Pin, time::Duration};

use crate::{Endpoint, Message};

mod memory;

/// JSON encoding of endpoints and attempts, shared by the Postgres and Redis queues.
#[cfg(any(feature = "postgres", feature = "redis"))]
mod codec;
pub use memory::MemoryQueue;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresQueue;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::RedisQueue;

/// Open the queue a store URL names: `memory` / `memory://` (a fresh, empty
/// [`MemoryQueue`]), `postgres://` / `postgresql://` (feature `postgres`,
/// `PostgresQueue`) or `redis://` / `rediss://` (feature `redis`,
/// `RedisQueue`), each with its default namespace.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let queue = hookgate_sender::queue::open("memory://").await?;
/// assert_eq!(queue.stats().await?.pending, 0);
/// assert!(hookgate_sender::queue::open("ftp://x").await.is_err());
/// # Ok::<(), hookgate_sender::queue::QueueError>(())
/// # }).unwrap();
/// ```
///
/// # Errors
/// [`QueueErrorKind::Config`] for an unsupported scheme or a backend not
/// compiled in; the backend's connection error otherwise. The error never
/// contains the URL (which may hold a password).
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Queue>> {
    open_namespaced(url, None).await
}

/// [`open`], in `namespace` when given: the Postgres schema (`a-z`, `0-9`,
/// `_`), or the Redis key prefix `<namespace>:q:`. Ignored by the memory queue.
///
/// # Errors
/// As [`open`], and an invalid namespace.
pub async fn open_namespaced(
    url: &str,
    namespace: Option<&str>,
) -> Result<std::sync::Arc<dyn Queue>> {
    let scheme = url.split_once("://").map_or(url, |(s, _)| s);
    match scheme {
        "memory" => Ok(std::sync::Arc::new(MemoryQueue::new())),
        "postgres" | "postgresql" => open_postgres(url, namespace).await,
        "redis" | "rediss" => open_redis(url, namespace).await,
        _ => Err(QueueError::new(
            QueueErrorKind::Config,
            format!(
                "unsupported store URL scheme {:?} (expected memory, postgres:// or redis://)",
                scheme.chars().take(32).collect::<String>()
            ),
        )),
    }
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str, namespace: Option<&str>) -> Result<std::sync::Arc<dyn Queue>> {
    let mut queue = PostgresQueue::connect(url).await?;
    if let Some(ns) = namespace {
        queue = queue.with_schema(ns)?;
    }
    Ok(std::sync::Arc::new(queue))
}

#[cfg(not(feature = "postgres"))]
#[allow(clippy::unused_async)]
async fn open_postgres(_url: &str, _namespace: Option<&str>) -> Result<std::sync::Arc<dyn Queue>> {
    Err(QueueError::new(
        QueueErrorKind::Config,
        "postgres:// needs hookgate-sender's `postgres` feature",
    ))
}

#[cfg(feature = "redis")]
async fn open_redis(url: &str, namespace: Option<&str>) -> Result<std::sync::Arc<dyn Queue>> {
    let mut queue = RedisQueue::connect(url).await?;
    if let Some(ns) = namespace {
        queue = queue.with_prefix(&format!("{ns}:q:"))?;
    }
    Ok(std::sync::Arc::new(queue))
}

#[cfg(not(feature = "redis"))]
#[allow(clippy::unused_async)]
async fn open_redis(_url: &str, _namespace: Option<&str>) -> Result<std::sync::Arc<dyn Queue>> {
    Err(QueueError::new(
        QueueErrorKind::Config,
        "redis:// needs hookgate-sender's `redis` feature",
    ))
}

/// A boxed future, as the queue methods return (keeps [`Queue`] usable as `dyn Queue`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Result of a queue operation.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// One message to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryKey {
    /// The endpoint's id.
    pub endpoint: String,
    /// The message's id.
    pub message_id: String,
}

/// Proof of holding one lease (fencing token).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseToken(pub String);

/// A delivery waiting in the queue.
#[derive(Debug, Clone)]
pub struct Job {
    /// Which delivery.
    pub key: DeliveryKey,
    /// The message.
    pub message: Message,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due, Unix milliseconds.
    pub next_attempt_ms: i64,
}

/// A job a worker holds the lease on.
#[derive(Debug, Clone)]
pub struct Leased {
    /// The job.
    pub job: Job,
    /// The lease's fencing token.
    pub token: LeaseToken,
}

/// One delivery attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// When it started, Unix milliseconds.
    pub at_ms: i64,
    /// The URL tried.
    pub url: String,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// Time to the response (or the failure), milliseconds.
    pub latency_ms: u64,
    /// What went wrong, when something did (never contains secrets).
    pub error: Option<String>,
}

/// A delivery that will not be attempted again unless replayed.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Which delivery.
    pub key: DeliveryKey,
    /// The message, payload included.
    pub message: Message,
    /// Every attempt, oldest first.
    pub attempts: Vec<Attempt>,
    /// Why it was dead-lettered (`exhausted`, `permanent: 400`, ...).
    pub reason: String,
    /// When, Unix milliseconds.
    pub dead_at_ms: i64,
}

/// Which dead letters to list.
#[derive(Debug, Clone, Default)]
pub struct DlqFilter {
    /// Only this endpoint.
    pub endpoint: Option<String>,
    /// Dead-lettered at or after (Unix ms).
    pub since_ms: Option<i64>,
    /// Dead-lettered before (Unix ms).
    pub until_ms: Option<i64>,
}

/// A page of a listing: at most `limit` items after `after` (exclusive), in
/// `(dead_at_ms, key)` order.
#[derive(Debug, Clone)]
pub struct Page {
    /// Continue after this item (the last one of the previous page).
    pub after: Option<(i64, DeliveryKey)>,
    /// Page size.
    pub limit: usize,
}

/// Counts an operator graphs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Deliveries waiting (due or scheduled), leased ones included.
    pub pending: u64,
    /// Deliveries currently leased by a worker.
    pub leased: u64,
    /// Dead letters.
    pub dead: u64,
}

/// Class of a [`QueueError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueErrorKind {
    /// The backend could not be reached.
    Unavailable,
    /// The backend answered with an error, or holds data it should not.
    Backend,
    /// No such endpoint / delivery.
    NotFound,
    /// The store URL or a setting is invalid (e.g. an unsupported URL scheme).
    Config,
}

/// A queue operation failed. Boxes the backend's error as its source.
#[derive(Debug, thiserror::Error)]
#[error("queue {kind:?}: {message}")]
pub struct QueueError {
    kind: QueueErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl QueueError {
    /// A new error of `kind`.
    pub fn new(kind: QueueErrorKind, message: impl Into<String>) -> Self {
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
    pub fn kind(&self) -> QueueErrorKind {
        self.kind
    }
}

/// Durable storage for deliveries, endpoints and dead letters. See the
/// [module docs](self) for the contract.
pub trait Queue: Send + Sync + 'static {
    /// Store (insert or replace) an endpoint.
    fn put_endpoint<'a>(&'a self, endpoint: &'a Endpoint) -> BoxFuture<'a, Result<()>>;
    /// Load an endpoint.
    fn get_endpoint<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Endpoint>>>;
    /// Mark an endpoint disabled (410 Gone) or enabled again.
    fn set_endpoint_disabled<'a>(
        &'a self,
        id: &'a str,
        disabled: bool,
    ) -> BoxFuture<'a, Result<()>>;

    /// Store a delivery of `message` to `endpoint`, due now.
    fn enqueue<'a>(&'a self, endpoint: &'a str, message: &'a Message) -> BoxFuture<'a, Result<()>>;

    /// Lease up to `max` due deliveries for `lease`.
    fn lease(&self, max: usize, lease: Duration) -> BoxFuture<'_, Result<Vec<Leased>>>;

    /// Record `attempt` and schedule the next one at `next_attempt_ms`; frees the lease.
    fn retry_later<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
        attempt: Attempt,
        next_attempt_ms: i64,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Record the successful `attempt` and remove the delivery from the queue.
    fn delivered<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
        attempt: Attempt,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Record `attempt` (if any) and move the delivery, with its whole
    /// history, to the dead-letter queue.
    fn dead_letter<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
        attempt: Option<Attempt>,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Give the lease back unchanged (graceful shutdown): due again at once.
    fn release<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Insert a dead letter directly (e.g. `hookgate send --store`).
    fn add_dead_letter<'a>(&'a self, dead: &'a DeadLetter) -> BoxFuture<'a, Result<()>>;
    /// One page of dead letters, oldest first.
    fn list_dead<'a>(
        &'a self,
        filter: &'a DlqFilter,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>>;
    /// One dead letter.
    fn get_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<Option<DeadLetter>>>;
    /// Put a dead letter back into the queue, due now, same message id,
    /// attempt count reset. Returns `false` if there was no such dead letter.
    fn replay_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<bool>>;
    /// Delete a dead letter. Returns `false` if there was none.
    fn purge_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<bool>>;

    /// Queue and DLQ sizes.
    fn stats(&self) -> BoxFuture<'_, Result<QueueStats>>;
}

// `Arc<dyn Queue>` is how workers and senders share one queue.
impl<T: Queue + ?Sized> Queue for std::sync::Arc<T> {
    fn put_endpoint<'a>(&'a self, endpoint: &'a Endpoint) -> BoxFuture<'a, Result<()>> {
        (**self).put_endpoint(endpoint)
    }
    fn get_endpoint<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Endpoint>>> {
        (**self).get_endpoint(id)
    }
    fn set_endpoint_disabled<'a>(
        &'a self,
        id: &'a str,
        disabled: bool,
    ) -> BoxFuture<'a, Result<()>> {
        (**self).set_endpoint_disabled(id, disabled)
    }
    fn enqueue<'a>(&'a self, endpoint: &'a str, message: &'a Message) -> BoxFuture<'a, Result<()>> {
        (**self).enqueue(endpoint, message)
    }
    fn lease(&self, max: usize, lease: Duration) -> BoxFuture<'_, Result<Vec<Leased>>> {
        (**self).lease(max, lease)
    }
    fn retry_later<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
        attempt: Attempt,
        next_attempt_ms: i64,
    ) -> BoxFuture<'a, Result<bool>> {
        (**self).retry_later(key, token, attempt, next_attempt_ms)
    }
    fn delivered<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
        attempt: Attempt,
    ) -> BoxFuture<'a, Result<bool>> {
        (**self).delivered(key, token, attempt)
    }
    fn dead_letter<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
        attempt: Option<Attempt>,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        (**self).dead_letter(key, token, attempt, reason)
    }
    fn release<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
    ) -> BoxFuture<'a, Result<bool>> {
        (**self).release(key, token)
    }
    fn add_dead_letter<'a>(&'a self, dead: &'a DeadLetter) -> BoxFuture<'a, Result<()>> {
        (**self).add_dead_letter(dead)
    }
    fn list_dead<'a>(
        &'a self,
        filter: &'a DlqFilter,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>> {
        (**self).list_dead(filter, page)
    }
    fn get_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<Option<DeadLetter>>> {
        (**self).get_dead(key)
    }
    fn replay_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<bool>> {
        (**self).replay_dead(key)
    }
    fn purge_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<bool>> {
        (**self).purge_dead(key)
    }
    fn stats(&self) -> BoxFuture<'_, Result<QueueStats>> {
        (**self).stats()
    }
}
