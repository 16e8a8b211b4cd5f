//! Queue and dead-letter storage.
//!
//! One [`Queue`] trait, three backends: memory, Postgres (feature
//! `postgres`) and Redis (feature `redis`). A *delivery* is one message to one
//! endpoint, identified by a [`DeliveryKey`]. The contract:
//!
//! - Every delivery is in one explicit [`DeliveryState`]: `Scheduled`,
//!   `Leased`, `Held`, `Delivered` or `Dead`, stored as such by every backend.
//! - [`enqueue`](Queue::enqueue) returns only once the delivery is durably
//!   stored (for the memory queue: in memory), due now. A key has **one
//!   history**: enqueueing a key that exists in any state is a no-op that
//!   reports the state ([`Enqueued::Exists`]). Delivered keys are kept for a
//!   retention window ([`DEFAULT_DELIVERED_RETENTION`], 72 h, like the
//!   receiver's dedup); a dead-lettered key comes back only through
//!   [`replay_dead`](Queue::replay_dead), which keeps its history.
//! - [`lease`](Queue::lease) atomically takes up to `max` due deliveries whose
//!   lease is free or expired, gives each a fresh [`LeaseToken`] and **counts
//!   the attempt** (River's model), so a worker that crashes mid-attempt
//!   still spends the delivery's budget. Many workers may lease concurrently;
//!   no delivery is leased twice at once.
//! - Every outcome is one fenced [`settle`](Queue::settle) with a
//!   [`Transition`]: `Delivered`, `Retry { delay }`, `Defer { delay, reason }`
//!   and `Interrupted` (both refund the attempt), `Hold`, `Dead(reason)`. It
//!   applies only while the token still owns the lease, as one statement or
//!   script per variant, and returns whether it did.
//! - Time is the store's: transitions carry delays, which the store adds to
//!   its own clock.
//! - Every attempt passed to `settle` is recorded with the delivery, even
//!   when the lease was lost meanwhile, and kept in its dead letter.
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
/// `RedisQueue`), each with its default namespace. Postgres and Redis
/// queues seal endpoint credentials under the keys in
/// `HOOKGATE_ENCRYPTION_KEY` / `HOOKGATE_ENCRYPTION_KEY_FILE` when set
/// ([`crate::seal`]).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let queue = hookgate_sender::queue::open("memory://").await?;
/// assert_eq!(queue.stats().await?.pending(), 0);
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
    if let Some(keys) = env_keyring()? {
        queue = queue.with_keyring(keys);
    }
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
    if let Some(keys) = env_keyring()? {
        queue = queue.with_keyring(keys);
    }
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

/// The keyring from the environment ([`crate::seal::Keyring::from_env`]),
/// as a `Config` error when it does not parse.
#[cfg(any(feature = "postgres", feature = "redis"))]
fn env_keyring() -> Result<Option<crate::seal::Keyring>> {
    crate::seal::Keyring::from_env().map_err(|e| {
        QueueError::new(QueueErrorKind::Config, format!("encryption key: {e}")).with_source(e)
    })
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

/// Where a delivery is in its life. Stored explicitly by every backend.
///
/// ```text
/// enqueue ─▶ Scheduled ──lease──▶ Leased ──settle──▶ Delivered | Dead
///               ▲  ▲                 │ Retry / Defer / Interrupted
///               │  └─────────────────┘
///               └── release_held ── Held ◀── Hold
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeliveryState {
    /// Waiting until its next attempt is due.
    Scheduled,
    /// Held by a worker's lease (an expired lease is still `Leased` until
    /// another lease or the rescuer takes it).
    Leased,
    /// Waiting for its endpoint to be resumed ([`Queue::release_held`]).
    Held,
    /// Delivered; kept for the queue's retention window so that enqueueing
    /// the same key again is a no-op.
    Delivered,
    /// In the dead-letter queue.
    Dead,
}

impl DeliveryState {
    /// Lower-case name, as stored (`scheduled`, `leased`, `held`, `delivered`, `dead`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Leased => "leased",
            Self::Held => "held",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    /// The state named `s` (as [`as_str`](Self::as_str) writes it).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "scheduled" => Self::Scheduled,
            "leased" => Self::Leased,
            "held" => Self::Held,
            "delivered" => Self::Delivered,
            "dead" => Self::Dead,
            _ => return None,
        })
    }
}

impl std::fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a delivery was moved to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadReason {
    /// Every attempt the retry policy allows was spent.
    Exhausted {
        /// What the last attempt ran into (`HTTP 503 Service Unavailable`, ...).
        last: String,
    },
    /// The message is older than the retry policy's maximum age.
    Expired {
        /// What the last attempt ran into.
        last: String,
    },
    /// The receiver's answer (or the request itself) cannot succeed on retry.
    Permanent {
        /// What happened (`HTTP 400 Bad Request`, ...).
        detail: String,
    },
    /// The SSRF guard refused the destination.
    Refused {
        /// The guard's explanation.
        detail: String,
    },
    /// The receiver answered `410 Gone`; the endpoint was disabled.
    Gone,
    /// No endpoint with the delivery's endpoint id is stored.
    UnknownEndpoint,
    /// The stored endpoint's settings are invalid.
    InvalidEndpoint {
        /// What is wrong.
        detail: String,
    },
    /// The endpoint is disabled.
    EndpointDisabled,
    /// The delivery was stopped from outside (e.g. Ctrl-C during `hookgate send`).
    Interrupted,
    /// Anything else (written by hand or by an older version).
    Other {
        /// The text.
        detail: String,
    },
}

impl DeadReason {
    /// A short stable code (`exhausted`, `expired`, `permanent`, `refused`,
    /// `gone`, `unknown_endpoint`, `invalid_endpoint`, `endpoint_disabled`,
    /// `interrupted`, `other`), as stored and used in metric labels.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Exhausted { .. } => "exhausted",
            Self::Expired { .. } => "expired",
            Self::Permanent { .. } => "permanent",
            Self::Refused { .. } => "refused",
            Self::Gone => "gone",
            Self::UnknownEndpoint => "unknown_endpoint",
            Self::InvalidEndpoint { .. } => "invalid_endpoint",
            Self::EndpointDisabled => "endpoint_disabled",
            Self::Interrupted => "interrupted",
            Self::Other { .. } => "other",
        }
    }

    /// The free-text part, if the reason has one.
    #[must_use]
    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Exhausted { last } | Self::Expired { last } => Some(last),
            Self::Permanent { detail }
            | Self::Refused { detail }
            | Self::InvalidEndpoint { detail }
            | Self::Other { detail } => Some(detail),
            Self::Gone | Self::UnknownEndpoint | Self::EndpointDisabled | Self::Interrupted => None,
        }
    }

    /// The reason stored as `code` and `detail` (the inverse of
    /// [`code`](Self::code) and [`detail`](Self::detail)); an unknown code
    /// becomes [`DeadReason::Other`].
    #[must_use]
    pub fn from_parts(code: &str, detail: Option<&str>) -> Self {
        let d = || detail.unwrap_or_default().to_owned();
        match code {
            "exhausted" => Self::Exhausted { last: d() },
            "expired" => Self::Expired { last: d() },
            "permanent" => Self::Permanent { detail: d() },
            "refused" => Self::Refused { detail: d() },
            "gone" => Self::Gone,
            "unknown_endpoint" => Self::UnknownEndpoint,
            "invalid_endpoint" => Self::InvalidEndpoint { detail: d() },
            "endpoint_disabled" => Self::EndpointDisabled,
            "interrupted" => Self::Interrupted,
            "other" => Self::Other { detail: d() },
            other => Self::Other {
                detail: match detail {
                    Some(det) => format!("{other}: {det}"),
                    None => other.to_owned(),
                },
            },
        }
    }
}

impl std::fmt::Display for DeadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exhausted { last } => write!(f, "exhausted (last: {last})"),
            Self::Expired { last } => write!(f, "message too old (last: {last})"),
            Self::Permanent { detail } => write!(f, "permanent: {detail}"),
            Self::Refused { detail } => write!(f, "permanent: {detail}"),
            Self::Gone => f.write_str("gone: 410 Gone; endpoint disabled"),
            Self::UnknownEndpoint => f.write_str("unknown endpoint"),
            Self::InvalidEndpoint { detail } => write!(f, "invalid endpoint: {detail}"),
            Self::EndpointDisabled => f.write_str("endpoint disabled"),
            Self::Interrupted => f.write_str("interrupted"),
            Self::Other { detail } => f.write_str(detail),
        }
    }
}

/// Why a delivery was put off without spending an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeferReason {
    /// The endpoint's rate limit has no room now.
    RateLimited,
    /// Every URL of the endpoint has an open circuit breaker.
    CircuitOpen,
    /// The endpoint's in-flight cap is reached.
    Busy,
}

/// What becomes of a leased delivery: the one argument of [`Queue::settle`].
///
/// Delays are relative: the store adds them to its own clock (Postgres
/// `now()`, Redis `TIME`, the memory queue's clock), so workers with skewed
/// clocks agree on when a delivery is due.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transition {
    /// Delivered: kept as [`DeliveryState::Delivered`] for the retention window.
    Delivered,
    /// Try again after `delay`. The attempt counted at lease time stays spent.
    Retry {
        /// Wait before the next attempt.
        delay: Duration,
    },
    /// Put off for `delay` without spending an attempt (the one counted at
    /// lease time is refunded). The caller bounds how long (maximum age).
    Defer {
        /// Wait before the next attempt.
        delay: Duration,
        /// Why.
        reason: DeferReason,
    },
    /// The attempt was not made or not finished (shutdown): due again at
    /// once, the attempt refunded.
    Interrupted,
    /// Park until [`Queue::release_held`] (endpoint paused); the attempt is refunded.
    Hold,
    /// Move to the dead-letter queue.
    Dead(DeadReason),
}

impl Transition {
    /// The state the delivery is in after this transition applied.
    #[must_use]
    pub fn target(&self) -> DeliveryState {
        match self {
            Self::Delivered => DeliveryState::Delivered,
            Self::Retry { .. } | Self::Defer { .. } | Self::Interrupted => DeliveryState::Scheduled,
            Self::Hold => DeliveryState::Held,
            Self::Dead(_) => DeliveryState::Dead,
        }
    }

    /// Whether the transition gives back the attempt counted at lease time.
    #[must_use]
    pub fn refunds(&self) -> bool {
        matches!(self, Self::Defer { .. } | Self::Interrupted | Self::Hold)
    }
}

/// What [`Queue::enqueue`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Enqueued {
    /// A new delivery was stored, due now.
    New,
    /// The key already exists in this state; nothing changed. A key has one
    /// history: a delivered key stays delivered (for the retention window),
    /// a dead-lettered one comes back only through [`Queue::replay_dead`].
    Exists(DeliveryState),
}

/// A delivery waiting in the queue.
#[derive(Debug, Clone)]
pub struct Job {
    /// Which delivery.
    pub key: DeliveryKey,
    /// The message.
    pub message: Message,
    /// Attempts counted so far, **this lease's included** (attempts are
    /// counted when leased; [`Transition::refunds`] gives one back). So the
    /// attempt about to be made is number `attempts`.
    pub attempts: u32,
    /// When the delivery was due (store clock, Unix milliseconds).
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
    /// Why it was dead-lettered.
    pub reason: DeadReason,
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

/// Counts by [`DeliveryState`], as an operator graphs them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Waiting for their next attempt.
    pub scheduled: u64,
    /// Leased by a worker (live leases; an expired lease counts as scheduled).
    pub leased: u64,
    /// Held while their endpoint is paused.
    pub held: u64,
    /// Delivered and still within the retention window.
    pub delivered: u64,
    /// Dead letters.
    pub dead: u64,
}

impl QueueStats {
    /// Deliveries not finished yet: scheduled, leased or held.
    #[must_use]
    pub fn pending(&self) -> u64 {
        self.scheduled + self.leased + self.held
    }
}

/// How long delivered keys are kept by default (matches the receiver's
/// 72 h dedup retention): enqueueing the same key within it is a no-op.
pub const DEFAULT_DELIVERED_RETENTION: Duration = Duration::from_secs(72 * 3600);

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
    /// A sealed endpoint record cannot be opened: its key is not configured
    /// or does not decrypt it (see [`crate::seal::SealError`], the source).
    Encryption,
    /// The queue does not implement this (optional) operation, e.g. a
    /// third-party queue without an audit trail.
    Unsupported,
}

/// A queue operation failed. Boxes the backend's error as its source.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
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

/// One named, versioned record of an endpoint's shared resilience state
/// (a URL's circuit breaker, the rate limiter, the failure streak), as
/// [`Queue::endpoint_state`] returns it. The value is opaque to the store;
/// [`crate::breaker`], [`crate::limiter`] and [`crate::lifecycle`] encode it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRecord {
    /// The record's name within the endpoint (`breaker:0`, `limiter`, ...).
    pub name: String,
    /// Bumped by every successful [`Queue::swap_endpoint_state`]; never 0.
    pub version: u64,
    /// The encoded state.
    pub value: String,
}

/// Durable storage for deliveries, endpoints and dead letters. See the
/// [module docs](self) for the contract.
pub trait Queue: Send + Sync + 'static {
    /// Store an endpoint: insert it, or replace the stored configuration
    /// while **keeping the stored `disabled` flag** (only
    /// [`set_endpoint_disabled`](Self::set_endpoint_disabled) changes it).
    /// [`Sender::add_endpoint`](crate::Sender::add_endpoint) refuses to
    /// replace a different configuration.
    fn put_endpoint<'a>(&'a self, endpoint: &'a Endpoint) -> BoxFuture<'a, Result<()>>;
    /// Load an endpoint.
    fn get_endpoint<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Endpoint>>>;
    /// Mark an endpoint disabled (410 Gone) or enabled again.
    fn set_endpoint_disabled<'a>(
        &'a self,
        id: &'a str,
        disabled: bool,
    ) -> BoxFuture<'a, Result<()>>;
    /// Every endpoint, ordered by id.
    fn list_endpoints(&self) -> BoxFuture<'_, Result<Vec<Endpoint>>>;
    /// Delete an endpoint's record; `false` if there was none. Its
    /// deliveries stay: a worker dead-letters each (unknown endpoint) when
    /// it next leases it, so they can be replayed once the endpoint is back.
    fn remove_endpoint<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// Store a delivery of `message` to `endpoint`, due now, unless the key
    /// exists in any state (see [`Enqueued::Exists`]).
    fn enqueue<'a>(
        &'a self,
        endpoint: &'a str,
        message: &'a Message,
    ) -> BoxFuture<'a, Result<Enqueued>>;

    /// Lease up to `max` due deliveries (scheduled and due, or leased with
    /// an expired lease) for `lease`, counting one attempt on each.
    fn lease(&self, max: usize, lease: Duration) -> BoxFuture<'_, Result<Vec<Leased>>>;

    /// Lease the one delivery `key` for `lease`, counting an attempt, if it
    /// is scheduled (due or not: the caller decides when) or leased with an
    /// expired lease. For one-shot senders that own a delivery (`hookgate
    /// send`, `dlq replay`); workers use [`lease`](Self::lease).
    fn lease_one<'a>(
        &'a self,
        key: &'a DeliveryKey,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<Leased>>>;

    /// Apply `transition` if `token` still holds the delivery's lease
    /// (expired or not, as long as no newer lease exists), in one atomic step.
    /// Returns whether it applied.
    ///
    /// `attempt`, when given, is appended to the delivery's history whether
    /// or not the transition applied (an attempt that reached the network
    /// is never lost), as long as the key exists; it never changes the
    /// state a newer lease holder sees.
    fn settle<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
        attempt: Option<Attempt>,
        transition: Transition,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Move every [`DeliveryState::Held`] delivery of `endpoint` back to
    /// scheduled, due now. Returns how many.
    fn release_held<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<u64>>;

    /// The state of one delivery, `None` when the key is unknown (or pruned).
    fn state<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<Option<DeliveryState>>>;

    /// Insert a dead letter directly (e.g. `hookgate send --store`). A key
    /// that exists in another state than dead is left alone (`false`).
    fn add_dead_letter<'a>(&'a self, dead: &'a DeadLetter) -> BoxFuture<'a, Result<bool>>;
    /// One page of dead letters, oldest first.
    fn list_dead<'a>(
        &'a self,
        filter: &'a DlqFilter,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>>;
    /// One dead letter.
    fn get_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<Option<DeadLetter>>>;
    /// Put a dead letter back into the queue (scheduled, due now, same
    /// message id, attempt count reset, history kept). Returns `false` if
    /// there was no such dead letter.
    fn replay_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<bool>>;
    /// Delete a dead letter and its history. Returns `false` if there was none.
    fn purge_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<bool>>;

    /// Counts by state.
    fn stats(&self) -> BoxFuture<'_, Result<QueueStats>>;

    /// Maintenance (the pruner): delete up to `max` keys that are finished
    /// for good, with their attempt history — delivered ones past the
    /// queue's retention window and, when `dead_retention` is given, dead
    /// letters filed longer ago (store clock). Returns how many.
    fn prune(&self, dead_retention: Option<Duration>, max: usize) -> BoxFuture<'_, Result<u64>>;

    /// Maintenance (the rescuer): take up to `max` deliveries whose lease
    /// expired without an outcome, under a fresh lease of `lease` and
    /// **without** counting another attempt (their lease already counted
    /// one), so the rescuer can run them through the retry policy.
    fn rescue(&self, max: usize, lease: Duration) -> BoxFuture<'_, Result<Vec<Leased>>>;

    /// Move every [`DeliveryState::Held`] delivery of `endpoint` to the
    /// dead-letter queue ([`DeadReason::EndpointDisabled`], history kept,
    /// replayable): what an operator does with a disabled endpoint's
    /// messages instead of re-enabling it. Returns how many.
    ///
    /// The default answers a `Config` error.
    fn dead_letter_held<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<u64>> {
        let _ = endpoint;
        Box::pin(async {
            Err(QueueError::new(
                QueueErrorKind::Config,
                "this queue cannot dead-letter held deliveries",
            ))
        })
    }

    /// Every shared resilience record of `endpoint` (breakers, limiter,
    /// failure streak), in one read. Shared by every worker on the store.
    ///
    /// The default answers a `Config` error: a backend without it runs the
    /// breakers, limiter and auto-disable with no shared state (workers
    /// treat the error as "no state", i.e. every breaker closed).
    fn endpoint_state<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<Vec<StateRecord>>> {
        let _ = endpoint;
        Box::pin(async {
            Err(QueueError::new(
                QueueErrorKind::Config,
                "this queue keeps no shared endpoint state",
            ))
        })
    }

    /// Compare-and-set one record: store `value` under `name` with version
    /// `expected + 1` if the stored version is `expected` (0: no record
    /// yet), atomically. Returns whether it did; a `false` means another
    /// worker changed it first (read again and re-decide).
    fn swap_endpoint_state<'a>(
        &'a self,
        endpoint: &'a str,
        name: &'a str,
        expected: u64,
        value: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        let _ = (endpoint, name, expected, value);
        Box::pin(async {
            Err(QueueError::new(
                QueueErrorKind::Config,
                "this queue keeps no shared endpoint state",
            ))
        })
    }
    /// Append one entry to `endpoint`'s audit trail ([`crate::audit`]),
    /// stamped with the store's clock. Entries are never changed; they
    /// outlive the endpoint's removal and go only through
    /// [`prune_audit`](Self::prune_audit). The default (for queues without
    /// an audit trail) is an [`Unsupported`](QueueErrorKind::Unsupported)
    /// error, which [`Sender`](crate::Sender) logs as a warning and goes on.
    fn append_audit<'a>(
        &'a self,
        endpoint: &'a str,
        actor: &'a str,
        change: &'a crate::audit::Change,
    ) -> BoxFuture<'a, Result<()>> {
        let _ = (endpoint, actor, change);
        Box::pin(std::future::ready(Err(no_audit())))
    }

    /// The last `limit` entries of `endpoint`'s audit trail, oldest first.
    fn endpoint_history<'a>(
        &'a self,
        endpoint: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<crate::audit::AuditEntry>>> {
        let _ = (endpoint, limit);
        Box::pin(std::future::ready(Err(no_audit())))
    }

    /// Maintenance (the pruner): delete up to `max` audit entries recorded
    /// longer ago than `retention` (store clock). Returns how many.
    fn prune_audit(&self, retention: Duration, max: usize) -> BoxFuture<'_, Result<u64>> {
        let _ = (retention, max);
        Box::pin(std::future::ready(Ok(0)))
    }
}

fn no_audit() -> QueueError {
    QueueError::new(
        QueueErrorKind::Unsupported,
        "this queue keeps no audit trail",
    )
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
    fn list_endpoints(&self) -> BoxFuture<'_, Result<Vec<Endpoint>>> {
        (**self).list_endpoints()
    }
    fn remove_endpoint<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        (**self).remove_endpoint(id)
    }
    fn enqueue<'a>(
        &'a self,
        endpoint: &'a str,
        message: &'a Message,
    ) -> BoxFuture<'a, Result<Enqueued>> {
        (**self).enqueue(endpoint, message)
    }
    fn lease(&self, max: usize, lease: Duration) -> BoxFuture<'_, Result<Vec<Leased>>> {
        (**self).lease(max, lease)
    }
    fn lease_one<'a>(
        &'a self,
        key: &'a DeliveryKey,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<Leased>>> {
        (**self).lease_one(key, lease)
    }
    fn settle<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
        attempt: Option<Attempt>,
        transition: Transition,
    ) -> BoxFuture<'a, Result<bool>> {
        (**self).settle(key, token, attempt, transition)
    }
    fn release_held<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<u64>> {
        (**self).release_held(endpoint)
    }
    fn state<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<Option<DeliveryState>>> {
        (**self).state(key)
    }
    fn add_dead_letter<'a>(&'a self, dead: &'a DeadLetter) -> BoxFuture<'a, Result<bool>> {
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
    fn prune(&self, dead_retention: Option<Duration>, max: usize) -> BoxFuture<'_, Result<u64>> {
        (**self).prune(dead_retention, max)
    }
    fn rescue(&self, max: usize, lease: Duration) -> BoxFuture<'_, Result<Vec<Leased>>> {
        (**self).rescue(max, lease)
    }
    fn dead_letter_held<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<u64>> {
        (**self).dead_letter_held(endpoint)
    }
    fn endpoint_state<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<Vec<StateRecord>>> {
        (**self).endpoint_state(endpoint)
    }
    fn swap_endpoint_state<'a>(
        &'a self,
        endpoint: &'a str,
        name: &'a str,
        expected: u64,
        value: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        (**self).swap_endpoint_state(endpoint, name, expected, value)
    }

    fn append_audit<'a>(
        &'a self,
        endpoint: &'a str,
        actor: &'a str,
        change: &'a crate::audit::Change,
    ) -> BoxFuture<'a, Result<()>> {
        (**self).append_audit(endpoint, actor, change)
    }
    fn endpoint_history<'a>(
        &'a self,
        endpoint: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<crate::audit::AuditEntry>>> {
        (**self).endpoint_history(endpoint, limit)
    }
    fn prune_audit(&self, retention: Duration, max: usize) -> BoxFuture<'_, Result<u64>> {
        (**self).prune_audit(retention, max)
    }
}

/// A delay in whole milliseconds, saturating.
pub(crate) fn delay_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
