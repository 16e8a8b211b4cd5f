//! The worker: lease due deliveries, attempt them with bounded concurrency,
//! record each outcome in the queue.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{sync::Arc, time::Duration};
//! use hookgate_sender::{MemoryQueue, Queue, Worker};
//!
//! let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
//! let handle = Worker::builder(queue)
//!     .with_concurrency(64)
//!     .build()?
//!     .spawn();
//! // ... on SIGTERM:
//! let report = handle.shutdown(Duration::from_secs(10)).await;
//! println!("{} attempts finished, {} leases handed back", report.finished, report.released);
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//! - A worker leases only as many deliveries as it has free concurrency, so a
//!   lease never ticks away while its delivery waits in a local queue.
//! - **At most `max_attempts` requests per message, plus at most one per
//!   worker crash or shutdown abort.** Attempts are counted when a delivery
//!   is leased (see [`Queue::lease`]), so a lease that runs out — the worker
//!   stalled, crashed, or its store calls were slow — still spends one; a
//!   delivery leased past its budget is dead-lettered without another
//!   request ([`decide::may_attempt`]). Only an attempt aborted by
//!   [`WorkerHandle::shutdown`] is refunded ([`Transition::Interrupted`]).
//! - Every store call the worker makes (lease, endpoint load, settle) has a
//!   deadline ([`WorkerBuilder::with_store_timeout`]), and
//!   [`WorkerBuilder::build`] checks that the lease covers the longest
//!   request plus an endpoint load and a settle, so one delivery is never
//!   attempted twice at once by live workers. An endpoint that cannot be
//!   loaded in time spends the leased attempt without a request (it is
//!   retried on the policy's schedule), so a slow store cannot make a
//!   message retry forever.
//! - Every outcome is one fenced [`Queue::settle`] with the transition the
//!   pure [`decide`](crate::decide::decide) chose; delays are passed, never
//!   instants, so the store's clock decides when a retry is due (a worker
//!   whose clock is off retries on time). An attempt that reached the
//!   network is recorded even when the lease was lost meanwhile.
//! - **Failover and circuit breakers**: an endpoint's URLs are tried in
//!   order; each has a breaker ([`crate::breaker`]) shared by every worker
//!   on the store. A delivery uses the first URL whose breaker is closed or
//!   due for its half-open probe; when all are open it is deferred
//!   ([`Transition::Defer`]) without spending an attempt until the first
//!   cool-down ends (bounded by the maximum age).
//! - **Rate limit**: an endpoint with [`Endpoint::rate_limit`] takes a token
//!   from a bucket shared by every worker ([`crate::limiter`]) before each
//!   attempt, or is deferred without spending an attempt; `429`/`503`
//!   halve the rate (a `429` itself is deferred, not retried), success
//!   raises it again.
//! - **No noisy neighbours**: at most [`Endpoint::max_in_flight`] (else
//!   [`WorkerBuilder::with_max_in_flight_per_endpoint`]) attempts to one
//!   endpoint run at once in a worker; the rest are deferred for
//!   [`WorkerBuilder::with_busy_delay`], so a black-holed endpoint holds at
//!   most its cap of the worker's slots.
//! - **Lifecycle**: `410 Gone` or continuous failure ([`crate::lifecycle`])
//!   disables the endpoint; a disabled endpoint's deliveries are held
//!   ([`Transition::Hold`]) until [`Sender::enable_endpoint`](crate::Sender::enable_endpoint).
//! - A worker that dies loses nothing: its leases expire and another worker
//!   takes them (delivery is at least once; the receiver deduplicates on the
//!   message id).
//! - [`WorkerHandle::shutdown`] stops leasing (also while a lease call is
//!   waiting on the store), lets in-flight attempts finish within the grace
//!   period, then aborts the rest and hands their leases back
//!   ([`Transition::Interrupted`]); it returns within the grace plus one
//!   second.
//!
//! # Metrics
//!
//! Through the [`metrics`] facade:
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `hookgate_sender_attempts_total` | counter | `endpoint`, `outcome` (`delivered`, `retry`, `permanent`, `gone`) | attempts made |
//! | `hookgate_sender_attempt_duration_seconds` | histogram | `endpoint` | time to the response or failure |
//! | `hookgate_sender_delivered_total` | counter | `endpoint` | deliveries recorded as delivered |
//! | `hookgate_sender_retries_scheduled_total` | counter | `endpoint` | retries recorded in the queue |
//! | `hookgate_sender_dead_lettered_total` | counter | `endpoint` | deliveries recorded as dead letters |
//! | `hookgate_sender_lease_lost_total` | counter | `endpoint` | outcomes the queue refused because the lease was lost |
//! | `hookgate_sender_in_flight` | gauge | | attempts running in this worker |
//! | `hookgate_sender_queue_pending` | gauge | | deliveries not finished: scheduled, leased or held (from [`Queue::stats`], every stats interval) |
//! | `hookgate_sender_queue_leased` | gauge | | deliveries leased by some worker |
//! | `hookgate_sender_dlq_size` | gauge | | dead letters |
//! | `hookgate_sender_deferred_total` | counter | `endpoint`, `reason` (`busy`, `circuit_open`, `rate_limited`) | deliveries put off without spending an attempt |
//! | `hookgate_sender_held_total` | counter | `endpoint` | deliveries held because their endpoint is disabled |
//! | `hookgate_sender_breaker_transitions_total` | counter | `endpoint`, `url` (index), `to` (`open`, `half_open`, `closed`) | circuit-breaker transitions this worker made |
//! | `hookgate_sender_endpoint_tier` | gauge | `endpoint`, `tier` (`critical`, `standard`, `best-effort`, `default`) | 1 for each endpoint this worker loaded: the tier its alerts follow |
//! | `hookgate_sender_breaker_state` | gauge | `endpoint`, `url` | last state this worker set: 0 closed, 1 half-open, 2 open |
//! | `hookgate_sender_throttled_total` | counter | `endpoint` | `429`/`503` answers of rate-limited endpoints |
//! | `hookgate_sender_rate_limit` | gauge | `endpoint` | the adaptive rate (messages/s) after this worker's last change |
//! | `hookgate_sender_health_probes_total` | counter | `endpoint`, `result` (`ok`, `failed`) | health checks of endpoints with an open breaker |
//! | `hookgate_sender_endpoints_disabled_total` | counter | `endpoint`, `reason` (`gone`, `failing`) | endpoints this worker disabled |
//!
//! The three outcome counters count only outcomes the queue accepted (a
//! settle whose lease was lost is counted in `lease_lost_total` instead).
//! Endpoint ids are label values: keep them to a bounded set.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use rand::{rngs::StdRng, SeedableRng};
use tokio::{
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tracing::Instrument;

use crate::{
    breaker::Phase,
    decide::{self, Context, Decision, Effect, Happened, Plan, PlanInput},
    delivery::{DeliveryClient, Prepared},
    now_ms,
    outcome::{Class, Classifier},
    queue::{
        Attempt, DeadReason, DeliveryKey, Job, LeaseToken, Leased, Queue, QueueError,
        QueueErrorKind, StateRecord, Transition,
    },
    retry::{RetryPolicy, RetryPolicyError},
    ssrf::{Resolver, SsrfPolicy, SystemResolver},
    state::{breaker_name, EndpointHealth, LIMITER, STREAK},
    Endpoint, DEFAULT_TIMEOUT,
};

/// Default number of attempts running at once.
pub const DEFAULT_CONCURRENCY: usize = 32;
/// Default lease.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// Default pause between polls of an empty queue.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Default grace period when a [`WorkerHandle`] is dropped without [`shutdown`](WorkerHandle::shutdown).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// How much longer than the longest attempt plus two store calls a lease must be.
pub const LEASE_MARGIN: Duration = Duration::from_millis(500);
/// Longest wait for one store call, unless the lease leaves less room
/// (see [`WorkerBuilder::with_store_timeout`]).
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest store deadline [`WorkerBuilder::build`] accepts.
pub const MIN_STORE_TIMEOUT: Duration = Duration::from_millis(50);
/// Default wait of a delivery deferred because its endpoint's in-flight cap is reached.
pub const DEFAULT_BUSY_DELAY: Duration = Duration::from_secs(1);
/// Default time an endpoint's shared state (breakers, limiter) read from the store is reused.
pub const DEFAULT_STATE_TTL: Duration = Duration::from_millis(250);
/// Default interval of health probes ([`WorkerBuilder::with_health_probe_interval`]).
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
/// Compare-and-set rounds on an endpoint's shared state before giving up (deferring).
const STATE_ROUNDS: usize = 5;

/// A worker could not be built from its settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerBuildError {
    /// The lease cannot cover the longest attempt, an endpoint load and a
    /// settle (each store call bounded by the store timeout) plus [`LEASE_MARGIN`].
    #[error("lease ({lease:?}) must cover the request timeout ({timeout:?}), two store calls of {store_timeout:?} (at least {MIN_STORE_TIMEOUT:?} each) and {LEASE_MARGIN:?}")]
    LeaseTooShort {
        /// The lease.
        lease: Duration,
        /// The request timeout.
        timeout: Duration,
        /// The store deadline.
        store_timeout: Duration,
    },
    /// Concurrency, batch size or an interval is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The retry policy is invalid.
    #[error(transparent)]
    Retry(#[from] RetryPolicyError),
}

/// What happens to a delivery after an attempt, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Next {
    /// Delivered.
    Delivered,
    /// Scheduled again, spending an attempt.
    RetryAt {
        /// When, by the worker's clock (the store schedules it `delay` after
        /// its own now).
        at_ms: i64,
        /// The wait.
        delay: Duration,
    },
    /// Put off without spending an attempt.
    Deferred {
        /// The wait.
        delay: Duration,
    },
    /// Handed back to the queue, due at once, the attempt refunded.
    Interrupted,
    /// Held until the endpoint is resumed.
    Held,
    /// Moved to the dead-letter queue.
    DeadLettered {
        /// Why.
        reason: DeadReason,
    },
}

impl Next {
    /// The report of `transition`, at `now_ms` (worker clock).
    #[must_use]
    pub fn of(transition: &Transition, now_ms: i64) -> Self {
        match transition {
            Transition::Delivered => Self::Delivered,
            Transition::Retry { delay } => Self::RetryAt {
                at_ms: now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                delay: *delay,
            },
            Transition::Defer { delay, .. } => Self::Deferred { delay: *delay },
            Transition::Interrupted => Self::Interrupted,
            Transition::Hold => Self::Held,
            Transition::Dead(reason) => Self::DeadLettered {
                reason: reason.clone(),
            },
        }
    }

    /// A short name for logs and spans: `delivered`, `retry`, `dead`,
    /// `deferred`, `interrupted`, `held`.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::RetryAt { .. } => "retry",
            Self::DeadLettered { .. } => "dead",
            Self::Deferred { .. } => "deferred",
            Self::Interrupted => "interrupted",
            Self::Held => "held",
        }
    }

    /// Whether the delivery is finished (delivered or dead-lettered).
    #[must_use]
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Delivered | Self::DeadLettered { .. })
    }
}

/// One attempt, as reported to [`WorkerBuilder::with_on_attempt`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AttemptReport {
    /// Which delivery.
    pub key: DeliveryKey,
    /// 1-based attempt number (attempts counted by the queue, this one included).
    pub number: u32,
    /// The attempt, or `None` when none was made (unknown, invalid or
    /// disabled endpoint, store failure, budget spent by earlier leases).
    pub attempt: Option<Attempt>,
    /// The attempt's class, when one was made.
    pub class: Option<Class>,
    /// The address connected to, when known.
    pub remote_addr: Option<SocketAddr>,
    /// What follows.
    pub next: Next,
    /// Whether the queue accepted the outcome (`false`: the lease was lost,
    /// e.g. it expired and another worker took the delivery; the attempt is
    /// still recorded in the delivery's history).
    pub recorded: bool,
}

type OnAttempt = Arc<dyn Fn(&AttemptReport) + Send + Sync>;
type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Settings of a [`Worker`]; see [`Worker::builder`].
#[must_use]
pub struct WorkerBuilder {
    queue: Arc<dyn Queue>,
    concurrency: usize,
    batch_size: Option<usize>,
    lease: Duration,
    max_request_timeout: Duration,
    store_timeout: Option<Duration>,
    poll_interval: Duration,
    stats_interval: Duration,
    endpoint_cache_ttl: Duration,
    retry: RetryPolicy,
    classifier: Classifier,
    ssrf: SsrfPolicy,
    resolver: Arc<dyn Resolver>,
    on_attempt: Option<OnAttempt>,
    seed: Option<u64>,
    clock: Clock,
    max_in_flight_per_endpoint: Option<usize>,
    busy_delay: Duration,
    state_ttl: Duration,
    health_interval: Option<Duration>,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("concurrency", &self.concurrency)
            .field("batch_size", &self.batch_size)
            .field("lease", &self.lease)
            .field("max_request_timeout", &self.max_request_timeout)
            .field("store_timeout", &self.store_timeout)
            .field("poll_interval", &self.poll_interval)
            .field("retry", &self.retry)
            .field("ssrf", &self.ssrf)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// Attempts running at once (default 32).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Most deliveries leased per poll (default: the concurrency).
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = Some(n);
        self
    }

    /// Lease per delivery (default 60 s). Must cover the request timeout,
    /// two store calls and [`LEASE_MARGIN`]; it is also how long a crashed
    /// worker's deliveries wait before another worker takes them.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Longest attempt (default 30 s): endpoint timeouts above it are cut to it.
    pub fn with_max_request_timeout(mut self, timeout: Duration) -> Self {
        self.max_request_timeout = timeout;
        self
    }

    /// Deadline of every store call the worker makes (lease, endpoint load,
    /// settle). Default: [`DEFAULT_STORE_TIMEOUT`], or less when the lease
    /// leaves less room (half of what remains after the request timeout and
    /// [`LEASE_MARGIN`]).
    pub fn with_store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = Some(timeout);
        self
    }

    /// Pause between polls while the queue has nothing due (default 100 ms).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How often queue depth gauges are refreshed (default 15 s).
    pub fn with_stats_interval(mut self, interval: Duration) -> Self {
        self.stats_interval = interval;
        self
    }

    /// How long an endpoint read from the queue is reused (default 5 s).
    pub fn with_endpoint_cache_ttl(mut self, ttl: Duration) -> Self {
        self.endpoint_cache_ttl = ttl;
        self
    }

    /// The retry policy (default [`RetryPolicy::default`]).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Which statuses are retried (default [`Classifier::default`]).
    pub fn with_classifier(mut self, classifier: Classifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// The SSRF policy (default: strict).
    pub fn with_ssrf_policy(mut self, policy: SsrfPolicy) -> Self {
        self.ssrf = policy;
        self
    }

    /// Resolve host names through `resolver` (default: the system's).
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Call `f` after every attempt (from the attempt's task; keep it quick).
    pub fn with_on_attempt(mut self, f: impl Fn(&AttemptReport) + Send + Sync + 'static) -> Self {
        self.on_attempt = Some(Arc::new(f));
        self
    }

    /// Seed the jitter's random number generator (tests).
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Read the worker's clock (Unix milliseconds) from `clock` instead of
    /// the system clock (tests of clock skew). The worker's clock only
    /// judges a message's age; when a retry is due is the store's business.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Most attempts to one endpoint running at once in this worker, unless
    /// the endpoint sets its own ([`Endpoint::max_in_flight`]). Default:
    /// the concurrency (no cap). A delivery over the cap is deferred for
    /// [`with_busy_delay`](Self::with_busy_delay) without spending an
    /// attempt, so a slow endpoint cannot take every slot from the others.
    pub fn with_max_in_flight_per_endpoint(mut self, n: usize) -> Self {
        self.max_in_flight_per_endpoint = Some(n);
        self
    }

    /// How long a delivery over its endpoint's in-flight cap waits (default 1 s).
    pub fn with_busy_delay(mut self, delay: Duration) -> Self {
        self.busy_delay = delay;
        self
    }

    /// How long an endpoint's shared state (breakers, limiter) read from the
    /// store is reused before reading it again (default 250 ms; zero reads
    /// it for every delivery). A stale read never loses an update: every
    /// write is a compare-and-set that re-reads on conflict.
    pub fn with_state_ttl(mut self, ttl: Duration) -> Self {
        self.state_ttl = ttl;
        self
    }

    /// How often endpoints with a [`health_url`](Endpoint::health_url) and
    /// an open breaker are probed (default 10 s; `None` never). A 2xx ends
    /// their open breakers' cool-down early, so the next delivery probes
    /// the URL; anything else keeps them open. Only endpoints this worker
    /// delivered to recently are probed. Probes go through the SSRF guard.
    pub fn with_health_probe_interval(mut self, interval: Option<Duration>) -> Self {
        self.health_interval = interval;
        self
    }

    /// Check the settings and build the worker.
    ///
    /// # Errors
    /// A lease that cannot cover the request timeout, two store calls and
    /// [`LEASE_MARGIN`]; a zero concurrency, batch size or interval; an
    /// invalid retry policy.
    pub fn build(self) -> Result<Worker, WorkerBuildError> {
        if self.concurrency == 0 {
            return Err(WorkerBuildError::Zero("concurrency"));
        }
        let batch = self.batch_size.unwrap_or(self.concurrency);
        if batch == 0 {
            return Err(WorkerBuildError::Zero("batch size"));
        }
        if self.max_in_flight_per_endpoint == Some(0) {
            return Err(WorkerBuildError::Zero("max in flight per endpoint"));
        }
        for (d, name) in [
            (self.poll_interval, "poll interval"),
            (self.stats_interval, "stats interval"),
            (self.max_request_timeout, "request timeout"),
        ] {
            if d.is_zero() {
                return Err(WorkerBuildError::Zero(name));
            }
        }
        let room = self
            .lease
            .saturating_sub(self.max_request_timeout)
            .saturating_sub(LEASE_MARGIN);
        let store_timeout = self
            .store_timeout
            .unwrap_or_else(|| DEFAULT_STORE_TIMEOUT.min(room / 2));
        if store_timeout < MIN_STORE_TIMEOUT || store_timeout.saturating_mul(2) > room {
            return Err(WorkerBuildError::LeaseTooShort {
                lease: self.lease,
                timeout: self.max_request_timeout,
                store_timeout,
            });
        }
        self.retry.validate()?;
        let client = DeliveryClient::with_resolver(self.ssrf, self.classifier, self.resolver)
            .with_max_timeout(self.max_request_timeout);
        let rng = match self.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        Ok(Worker {
            shared: Arc::new(Shared {
                queue: self.queue,
                client,
                retry: self.retry,
                concurrency: self.concurrency,
                batch: batch.min(self.concurrency),
                lease: self.lease,
                store_timeout,
                poll_interval: self.poll_interval,
                stats_interval: self.stats_interval,
                endpoint_ttl: self.endpoint_cache_ttl,
                endpoints: Mutex::new(HashMap::new()),
                on_attempt: self.on_attempt,
                rng: Mutex::new(rng),
                clock: self.clock,
                in_flight: Mutex::new(HashMap::new()),
                task_ids: AtomicU64::new(0),
                per_endpoint: Mutex::new(HashMap::new()),
                max_in_flight_per_endpoint: self
                    .max_in_flight_per_endpoint
                    .unwrap_or(self.concurrency),
                busy_delay: self.busy_delay,
                state_ttl: self.state_ttl,
                max_request_timeout: self.max_request_timeout,
                health_interval: self.health_interval.filter(|d| !d.is_zero()),
                states: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// Leases and delivers; see the [module docs](self).
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Arc<dyn Queue>,
    client: DeliveryClient,
    retry: RetryPolicy,
    concurrency: usize,
    batch: usize,
    lease: Duration,
    store_timeout: Duration,
    poll_interval: Duration,
    stats_interval: Duration,
    endpoint_ttl: Duration,
    endpoints: Mutex<HashMap<String, (Instant, EndpointState)>>,
    on_attempt: Option<OnAttempt>,
    rng: Mutex<StdRng>,
    clock: Clock,
    /// Leases held by running attempts (by task id: a delivery re-leased by
    /// this worker is a separate entry), handed back on shutdown.
    in_flight: Mutex<HashMap<u64, (DeliveryKey, LeaseToken)>>,
    task_ids: AtomicU64,
    /// Attempts running per endpoint (the in-flight cap).
    per_endpoint: Mutex<HashMap<String, usize>>,
    max_in_flight_per_endpoint: usize,
    busy_delay: Duration,
    state_ttl: Duration,
    max_request_timeout: Duration,
    health_interval: Option<Duration>,
    /// Shared endpoint state as last read or written, by endpoint.
    states: Mutex<HashMap<String, (Instant, Vec<StateRecord>)>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("concurrency", &self.concurrency)
            .field("batch", &self.batch)
            .field("lease", &self.lease)
            .field("store_timeout", &self.store_timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum EndpointState {
    Missing,
    Invalid(String),
    Ready(Arc<Ready>),
}

/// An endpoint checked and prepared once per URL, with its retry policy.
struct Ready {
    endpoint: Endpoint,
    /// One prepared endpoint per URL (failover order), each with that URL only.
    urls: Vec<Prepared>,
    /// The tier's retry policy, or the worker's.
    retry: RetryPolicy,
}

impl Ready {
    fn new(endpoint: Endpoint, worker_retry: &RetryPolicy) -> Result<Self, String> {
        let urls = endpoint
            .urls
            .iter()
            .map(|url| {
                let mut one = endpoint.clone();
                one.urls = vec![url.clone()];
                Prepared::new(one).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Err(crate::EndpointError::NoUrl.to_string());
        }
        let retry = endpoint
            .tier
            .map_or_else(|| worker_retry.clone(), |t| t.preset().retry);
        // An info series: the per-tier alert rules join on it by `endpoint`.
        metrics::gauge!(
            "hookgate_sender_endpoint_tier",
            "endpoint" => endpoint.id.clone(),
            "tier" => endpoint.tier.map_or("default", crate::tier::Tier::as_str)
        )
        .set(1.0);
        Ok(Self {
            endpoint,
            urls,
            retry,
        })
    }
}

/// Counts an attempt against its endpoint's in-flight cap until dropped.
struct Slot<'a> {
    shared: &'a Shared,
    endpoint: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut map = self
            .shared
            .per_endpoint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.endpoint) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.endpoint);
            }
        }
    }
}

/// What [`WorkerHandle::shutdown`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// In-flight attempts that finished within the grace period.
    pub finished: usize,
    /// Attempts aborted at the deadline.
    pub aborted: usize,
    /// Leases handed back to the queue.
    pub released: usize,
}

/// Controls a spawned worker. Dropping it shuts the worker down with
/// [`DEFAULT_GRACE`] in the background.
#[derive(Debug)]
pub struct WorkerHandle {
    stop: watch::Sender<Option<Duration>>,
    task: tokio::task::JoinHandle<ShutdownReport>,
}

impl WorkerHandle {
    /// Stop leasing, let in-flight attempts finish for up to `grace`, abort
    /// the rest and hand their leases back. Returns within `grace` plus one
    /// second, whatever the store is doing.
    pub async fn shutdown(self, grace: Duration) -> ShutdownReport {
        let _ = self.stop.send(Some(grace));
        self.task.await.unwrap_or_default()
    }

    /// Abort the worker at once, as if its process died: nothing is
    /// released, leases expire in the queue. For tests of crash safety.
    pub fn abort(self) {
        self.task.abort();
    }

    /// Whether the worker has stopped.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Worker {
    /// Start configuring a worker for `queue`.
    pub fn builder(queue: Arc<dyn Queue>) -> WorkerBuilder {
        WorkerBuilder {
            queue,
            concurrency: DEFAULT_CONCURRENCY,
            batch_size: None,
            lease: DEFAULT_LEASE,
            max_request_timeout: DEFAULT_TIMEOUT,
            store_timeout: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
            stats_interval: Duration::from_secs(15),
            endpoint_cache_ttl: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            classifier: Classifier::default(),
            ssrf: SsrfPolicy::default(),
            resolver: Arc::new(SystemResolver),
            on_attempt: None,
            seed: None,
            clock: Arc::new(now_ms),
            max_in_flight_per_endpoint: None,
            busy_delay: DEFAULT_BUSY_DELAY,
            state_ttl: DEFAULT_STATE_TTL,
            health_interval: Some(DEFAULT_HEALTH_INTERVAL),
        }
    }

    /// Run on the tokio runtime until [`WorkerHandle::shutdown`].
    #[must_use = "dropping the handle shuts the worker down"]
    pub fn spawn(self) -> WorkerHandle {
        let (stop, rx) = watch::channel(None);
        let task = tokio::spawn(self.shared.run(rx));
        WorkerHandle { stop, task }
    }

    /// Run until `signal` completes, then shut down with `grace`.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send,
        grace: Duration,
    ) -> ShutdownReport {
        let (stop, rx) = watch::channel(None);
        let run = self.shared.run(rx);
        tokio::pin!(run);
        tokio::select! {
            report = &mut run => return report,
            () = signal => {}
        }
        let _ = stop.send(Some(grace));
        run.await
    }

    /// Attempt one leased delivery and settle its outcome, exactly as the
    /// running worker does (decide, effects, one fenced settle, metrics),
    /// and report it. For one-shot senders that lease a delivery themselves
    /// (`hookgate send`, `dlq replay`): an operator's explicit delivery is
    /// not deferred by open circuit breakers — when every URL is open it
    /// probes the first (and its result closes or re-opens that breaker);
    /// the rate limit still applies.
    pub async fn deliver_once(&self, leased: Leased) -> AttemptReport {
        let span = self.shared.span(&leased.job);
        let report = self.shared.handle(leased, true).instrument(span).await;
        self.shared.report(&report);
        report
    }

    /// The lease this worker takes.
    #[must_use]
    pub fn lease(&self) -> Duration {
        self.shared.lease
    }

    /// The deadline this worker puts on each store call.
    #[must_use]
    pub fn store_timeout(&self) -> Duration {
        self.shared.store_timeout
    }
}

/// Wait for a stop request; a dropped sender means the default grace.
async fn stop_requested(rx: &mut watch::Receiver<Option<Duration>>) -> Duration {
    loop {
        if let Some(grace) = *rx.borrow_and_update() {
            return grace;
        }
        if rx.changed().await.is_err() {
            return rx.borrow().unwrap_or(DEFAULT_GRACE);
        }
    }
}

/// Counts an attempt in `hookgate_sender_in_flight` until dropped (aborted included).
struct InFlightGauge;

impl InFlightGauge {
    fn new() -> Self {
        metrics::gauge!("hookgate_sender_in_flight").increment(1.0);
        Self
    }
}

impl Drop for InFlightGauge {
    fn drop(&mut self) {
        metrics::gauge!("hookgate_sender_in_flight").decrement(1.0);
    }
}

/// Aborts the task on drop.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long shutdown waits for the aborted attempts' leases to be handed back.
const RELEASE_BUDGET: Duration = Duration::from_millis(900);

/// How long a lease call in flight when shutdown starts may still answer, so
/// that what it leased is handed back at once (inside the grace + 1 s bound
/// together with [`RELEASE_BUDGET`]; both are spent only when the store is slow).
const LEASE_ON_STOP: Duration = Duration::from_millis(300);

impl Shared {
    async fn run(self: Arc<Self>, mut stop: watch::Receiver<Option<Duration>>) -> ShutdownReport {
        let sem = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks: JoinSet<()> = JoinSet::new();
        let _stats = AbortOnDrop(tokio::spawn(self.clone().stats_loop()));
        let _health = self
            .health_interval
            .map(|every| AbortOnDrop(tokio::spawn(self.clone().health_loop(every))));
        tracing::debug!(
            concurrency = self.concurrency,
            "hookgate sender worker started"
        );
        let grace = loop {
            while let Some(res) = tasks.try_join_next() {
                log_join(res);
            }
            let first = tokio::select! {
                biased;
                grace = stop_requested(&mut stop) => break grace,
                permit = sem.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break Duration::ZERO,
                },
            };
            let mut permits = vec![first];
            while permits.len() < self.batch {
                match sem.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let lease = self.bounded("lease", self.queue.lease(permits.len(), self.lease));
            tokio::pin!(lease);
            let leased = tokio::select! {
                biased;
                grace = stop_requested(&mut stop) => {
                    // A lease call already sent gets a short while to answer,
                    // so what it took is handed back now (by `shutdown`)
                    // instead of waiting out its lease; one stuck on the
                    // store is dropped and what it leased, if anything,
                    // expires back.
                    if let Ok(Ok(jobs)) = tokio::time::timeout(LEASE_ON_STOP, &mut lease).await {
                        let mut in_flight = self.lock_in_flight();
                        for leased in jobs {
                            let id = self.task_ids.fetch_add(1, Ordering::Relaxed);
                            in_flight.insert(id, (leased.job.key.clone(), leased.token.clone()));
                        }
                    }
                    break grace;
                }
                r = &mut lease => r,
            };
            let idle = match leased {
                Ok(jobs) => {
                    let idle = jobs.is_empty();
                    for (leased, permit) in jobs.into_iter().zip(permits.drain(..)) {
                        let id = self.task_ids.fetch_add(1, Ordering::Relaxed);
                        self.lock_in_flight()
                            .insert(id, (leased.job.key.clone(), leased.token.clone()));
                        tasks.spawn(self.clone().process(id, leased, permit));
                    }
                    idle
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease failed");
                    true
                }
            };
            drop(permits);
            if idle {
                tokio::select! {
                    biased;
                    grace = stop_requested(&mut stop) => break grace,
                    () = tokio::time::sleep(self.poll_interval) => {}
                }
            }
        };
        self.shutdown(tasks, grace).await
    }

    async fn shutdown(&self, mut tasks: JoinSet<()>, grace: Duration) -> ShutdownReport {
        let mut report = ShutdownReport::default();
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = tasks.join_next() => match next {
                    Some(res) => {
                        log_join(res);
                        report.finished += 1;
                    }
                    None => break,
                },
                () = &mut deadline => {
                    report.aborted = tasks.len();
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        let remaining: Vec<_> = self.lock_in_flight().drain().map(|(_, v)| v).collect();
        let budget = RELEASE_BUDGET.min(self.store_timeout);
        let releases = remaining.iter().map(|(key, token)| async move {
            self.queue
                .settle(key, token, None, Transition::Interrupted)
                .await
        });
        match tokio::time::timeout(budget, futures_util::future::join_all(releases)).await {
            Ok(results) => {
                for r in results {
                    match r {
                        Ok(true) => report.released += 1,
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "hand-back failed; the lease will expire")
                        }
                    }
                }
            }
            Err(_) => tracing::warn!("hand-back timed out; the leases will expire"),
        }
        tracing::debug!(?report, "hookgate sender worker stopped");
        report
    }

    async fn stats_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.stats_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.bounded("stats", self.queue.stats()).await {
                Ok(s) => {
                    metrics::gauge!("hookgate_sender_queue_pending").set(s.pending() as f64);
                    metrics::gauge!("hookgate_sender_queue_leased").set(s.leased as f64);
                    metrics::gauge!("hookgate_sender_dlq_size").set(s.dead as f64);
                }
                Err(e) => tracing::debug!(error = %e, "queue stats failed"),
            }
        }
    }

    /// Probe the health URL of every endpoint in the cache that has one and
    /// an open breaker; a 2xx ends those breakers' cool-down.
    async fn health_loop(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let endpoints: Vec<Arc<Ready>> = self
                .endpoints
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .values()
                .filter_map(|(_, s)| match s {
                    EndpointState::Ready(r) if r.endpoint.health_url.is_some() => Some(r.clone()),
                    _ => None,
                })
                .collect();
            for ready in endpoints {
                self.probe_health(&ready.endpoint).await;
            }
        }
    }

    async fn probe_health(&self, endpoint: &Endpoint) {
        let Some(url) = &endpoint.health_url else {
            return;
        };
        let now = (self.clock)();
        let records = self.state_records(&endpoint.id, true).await;
        let health = EndpointHealth::from_records(endpoint, &records, now);
        let open: Vec<usize> = health
            .breakers
            .iter()
            .enumerate()
            .filter(|(_, b)| b.state.phase == Phase::Open && b.state.open_until_ms > now)
            .map(|(i, _)| i)
            .collect();
        if open.is_empty() {
            return;
        }
        let timeout = endpoint.timeout.min(self.max_request_timeout);
        let result = self.client.probe(url, timeout).await;
        let ok = matches!(result, Ok(200..=299));
        metrics::counter!(
            "hookgate_sender_health_probes_total",
            "endpoint" => endpoint.id.clone(),
            "result" => if ok { "ok" } else { "failed" }
        )
        .increment(1);
        if !ok {
            tracing::debug!(endpoint = %endpoint.id, ?result, "health probe failed; breakers stay open");
            return;
        }
        for i in open {
            let changed = self
                .update(endpoint, &breaker_name(i), |h, now| {
                    let mut b = h.breakers.get(i)?.state.clone();
                    b.health_ok(now).then(|| (b.encode(), ()))
                })
                .await;
            if changed.is_some() {
                tracing::info!(
                    endpoint = %endpoint.id,
                    url_index = i,
                    "health probe succeeded; the breaker's cool-down ends now"
                );
            }
        }
    }

    /// `fut`, or an `Unavailable` error once the store deadline passes.
    async fn bounded<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, QueueError>>,
    ) -> Result<T, QueueError> {
        match tokio::time::timeout(self.store_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(QueueError::new(
                QueueErrorKind::Unavailable,
                format!("{what}: no answer within {:?}", self.store_timeout),
            )),
        }
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (DeliveryKey, LeaseToken)>> {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn endpoint(&self, id: &str) -> Result<EndpointState, QueueError> {
        {
            let cache = self
                .endpoints
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((at, state)) = cache.get(id) {
                if at.elapsed() < self.endpoint_ttl {
                    return Ok(state.clone());
                }
            }
        }
        let state = match self
            .bounded("get_endpoint", self.queue.get_endpoint(id))
            .await?
        {
            None => EndpointState::Missing,
            Some(ep) => match Ready::new(ep, &self.retry) {
                Ok(r) => EndpointState::Ready(Arc::new(r)),
                Err(e) => EndpointState::Invalid(e),
            },
        };
        self.endpoints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned(), (Instant::now(), state.clone()));
        Ok(state)
    }

    fn forget_endpoint(&self, id: &str) {
        self.endpoints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }

    fn span(&self, job: &Job) -> tracing::Span {
        tracing::info_span!(
            "hookgate_sender.deliver",
            message_id = %job.key.message_id,
            endpoint = %job.key.endpoint,
            attempt = job.attempts,
            // Which of the endpoint's URLs was tried (failover order).
            url_index = tracing::field::Empty,
            status = tracing::field::Empty,
            outcome = tracing::field::Empty,
        )
    }

    async fn process(self: Arc<Self>, id: u64, leased: Leased, permit: OwnedSemaphorePermit) {
        let span = self.span(&leased.job);
        let gauge = InFlightGauge::new();
        let report = self.handle(leased, false).instrument(span.clone()).await;
        if let Some(status) = report.attempt.as_ref().and_then(|a| a.status) {
            span.record("status", status);
        }
        span.record("outcome", report.next.label());
        // Only a finished attempt leaves the in-flight map: an aborted one
        // stays there so that shutdown hands its lease back.
        self.lock_in_flight().remove(&id);
        drop(gauge);
        drop(permit);
        self.report(&report);
    }

    /// Attempt (unless the budget is spent or the endpoint unusable),
    /// decide, apply effects, settle, count.
    async fn handle(&self, leased: Leased, explicit: bool) -> AttemptReport {
        let Leased { job, token } = leased;
        let (happened, decision, ready) = if decide::may_attempt(&job, &self.retry) {
            self.step(&job, explicit).await
        } else {
            (None, decide::over_budget(&job), None)
        };
        self.apply(&job.key, ready.as_deref(), &decision).await;
        let result = match &happened {
            Some(Happened::Attempted(r)) => Some(r),
            _ => None,
        };
        let attempt = result.map(|r| r.attempt.clone());
        let recorded = match self
            .bounded(
                "settle",
                self.queue.settle(
                    &job.key,
                    &token,
                    attempt.clone(),
                    decision.transition.clone(),
                ),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "recording the outcome failed; the lease will expire");
                false
            }
        };
        emit(&job.key, &decision.transition, recorded);
        AttemptReport {
            key: job.key,
            number: job.attempts,
            attempt,
            class: result.map(|r| r.class),
            remote_addr: result.and_then(|r| r.remote_addr),
            next: Next::of(&decision.transition, (self.clock)()),
            recorded,
        }
    }

    /// Load the endpoint, plan (hold, defer, or which URL, claiming the
    /// shared state the plan needs), attempt, decide.
    async fn step(
        &self,
        job: &Job,
        explicit: bool,
    ) -> (Option<Happened>, Decision, Option<Arc<Ready>>) {
        let mut loaded = self.endpoint(&job.key.endpoint).await;
        if matches!(&loaded, Ok(EndpointState::Ready(r)) if r.endpoint.disabled) {
            // Never hold on a cached "disabled": it may have been enabled
            // (and its held deliveries released) since.
            self.forget_endpoint(&job.key.endpoint);
            loaded = self.endpoint(&job.key.endpoint).await;
        }
        let ready = match loaded {
            Ok(EndpointState::Ready(r)) => r,
            Ok(EndpointState::Missing) => return self.decided(job, Happened::EndpointMissing),
            Ok(EndpointState::Invalid(e)) => {
                return self.decided(job, Happened::EndpointInvalid(e))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot load endpoint");
                return self.decided(
                    job,
                    Happened::StoreFailed(format!("endpoint not loaded: {e}")),
                );
            }
        };
        if !decide::may_attempt(job, &ready.retry) {
            return (None, decide::over_budget(job), Some(ready));
        }
        let slot = self.claim_slot(&job.key.endpoint);
        let url = match self.plan(job, &ready, slot.1, explicit).await {
            Ok(url) => url,
            Err(decision) => return (None, decision, Some(ready)),
        };
        tracing::Span::current().record("url_index", url);
        let result = self
            .client
            .attempt_prepared(&ready.urls[url], &job.message)
            .await;
        drop(slot);
        let label = job.key.endpoint.clone();
        metrics::counter!(
            "hookgate_sender_attempts_total",
            "endpoint" => label.clone(),
            "outcome" => result.class.as_str()
        )
        .increment(1);
        metrics::histogram!("hookgate_sender_attempt_duration_seconds", "endpoint" => label)
            .record(result.attempt.latency_ms as f64 / 1000.0);
        tracing::debug!(
            status = result.attempt.status,
            latency_ms = result.attempt.latency_ms,
            error = result.attempt.error.as_deref(),
            class = result.class.as_str(),
            remote_addr = ?result.remote_addr,
            "attempt"
        );
        let happened = Happened::Attempted(result);
        let ctx = Context::for_endpoint(&ready.retry, &ready.endpoint, url);
        let decision = {
            let mut rng = self
                .rng
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            decide::decide_with(job, &happened, &ctx, (self.clock)(), &mut *rng)
        };
        (Some(happened), decision, Some(ready))
    }

    /// The decision for `happened` under the worker's policy (no endpoint).
    fn decided(
        &self,
        job: &Job,
        happened: Happened,
    ) -> (Option<Happened>, Decision, Option<Arc<Ready>>) {
        let decision = {
            let mut rng = self
                .rng
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            decide::decide(job, &happened, &self.retry, (self.clock)(), &mut *rng)
        };
        (Some(happened), decision, None)
    }

    /// Count an attempt to `endpoint`; returns the guard and how many were running before.
    fn claim_slot(&self, endpoint: &str) -> (Slot<'_>, usize) {
        let mut map = self
            .per_endpoint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(endpoint.to_owned()).or_insert(0);
        let before = *n;
        *n += 1;
        (
            Slot {
                shared: self,
                endpoint: endpoint.to_owned(),
            },
            before,
        )
    }

    /// Ask [`decide::plan`] where to attempt, and store the shared state it
    /// claims (limiter token, half-open probe) by compare-and-set, planning
    /// again on a conflict. `Err` is the decision when no attempt is made.
    async fn plan(
        &self,
        job: &Job,
        ready: &Ready,
        in_flight: usize,
        explicit: bool,
    ) -> Result<usize, Decision> {
        let ep = &ready.endpoint;
        let probe_lease = ep.timeout.min(self.client_max_timeout()) + LEASE_MARGIN;
        let input = PlanInput {
            policy: &ready.retry,
            in_flight,
            max_in_flight: ep
                .max_in_flight
                .map_or(self.max_in_flight_per_endpoint, |n| n as usize),
            busy_delay: self.busy_delay,
            probe_lease,
            explicit,
        };
        for round in 0..STATE_ROUNDS {
            let now = (self.clock)();
            let records = self.state_records(&ep.id, round > 0).await;
            let health = EndpointHealth::from_records(ep, &records, now);
            match decide::plan(job, ep, &health, &input, now) {
                Plan::Skip(d) => return Err(d),
                Plan::Attempt {
                    url,
                    probe,
                    limiter,
                } => {
                    if let (Some(l), Some((_, version))) = (limiter, &health.limiter) {
                        if !self.swap(&ep.id, LIMITER, *version, l.encode()).await {
                            continue;
                        }
                    }
                    if let Some(p) = probe {
                        let version = health.breakers[url].version;
                        if !self
                            .swap(&ep.id, &breaker_name(url), version, p.encode())
                            .await
                        {
                            continue;
                        }
                        log_breaker(&ep.id, url, Phase::Open, Phase::HalfOpen);
                    }
                    return Ok(url);
                }
            }
        }
        Err(Decision {
            transition: Transition::Defer {
                delay: self.busy_delay,
                reason: crate::queue::DeferReason::Busy,
            },
            effects: Vec::new(),
        })
    }

    fn client_max_timeout(&self) -> Duration {
        self.max_request_timeout
    }

    /// The endpoint's shared state: cached for the state TTL unless `fresh`.
    /// A store that fails or keeps no state reads as none (every breaker
    /// closed: resilience fails open rather than stopping deliveries).
    async fn state_records(&self, endpoint: &str, fresh: bool) -> Vec<StateRecord> {
        if !fresh {
            let cache = self
                .states
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((at, records)) = cache.get(endpoint) {
                if at.elapsed() < self.state_ttl {
                    return records.clone();
                }
            }
        }
        match self
            .bounded("endpoint_state", self.queue.endpoint_state(endpoint))
            .await
        {
            Ok(records) => {
                self.states
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(endpoint.to_owned(), (Instant::now(), records.clone()));
                records
            }
            Err(e) => {
                if e.kind() != QueueErrorKind::Config {
                    tracing::warn!(error = %e, "cannot read the endpoint's shared state");
                }
                Vec::new()
            }
        }
    }

    /// Compare-and-set one record; on success the cache holds the new
    /// value. A store error counts as success (fail open), a conflict not.
    async fn swap(&self, endpoint: &str, name: &str, version: u64, value: String) -> bool {
        match self
            .bounded(
                "swap_endpoint_state",
                self.queue
                    .swap_endpoint_state(endpoint, name, version, &value),
            )
            .await
        {
            Ok(true) => {
                let mut cache = self
                    .states
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some((_, records)) = cache.get_mut(endpoint) {
                    records.retain(|r| r.name != name);
                    records.push(StateRecord {
                        name: name.to_owned(),
                        version: version + 1,
                        value,
                    });
                }
                true
            }
            Ok(false) => false,
            Err(e) => {
                if e.kind() != QueueErrorKind::Config {
                    tracing::warn!(error = %e, "cannot write the endpoint's shared state");
                }
                true
            }
        }
    }

    /// Read-modify-write one record: `change` gets the endpoint's current
    /// state and answers the new value to store (or `None`: nothing to
    /// write) and what to report; retried on conflicts with fresh reads.
    async fn update<T>(
        &self,
        endpoint: &Endpoint,
        name: &str,
        mut change: impl FnMut(&EndpointHealth, i64) -> Option<(String, T)>,
    ) -> Option<T> {
        for round in 0..STATE_ROUNDS {
            let now = (self.clock)();
            let records = self.state_records(&endpoint.id, round > 0).await;
            let version = records
                .iter()
                .find(|r| r.name == name)
                .map_or(0, |r| r.version);
            let health = EndpointHealth::from_records(endpoint, &records, now);
            let (value, out) = change(&health, now)?;
            if self.swap(&endpoint.id, name, version, value).await {
                return Some(out);
            }
        }
        tracing::warn!(
            record = name,
            "endpoint state kept changing; update dropped"
        );
        None
    }

    async fn apply(&self, key: &DeliveryKey, ready: Option<&Ready>, decision: &Decision) {
        for effect in &decision.effects {
            match (effect, ready) {
                (Effect::DisableEndpoint, _) => {
                    self.disable(&key.endpoint, "gone").await;
                }
                (Effect::Breaker { url, ok }, Some(r)) => {
                    let (url, ok) = (*url, *ok);
                    let cfg = r.endpoint.breaker;
                    let changed = self
                        .update(&r.endpoint, &breaker_name(url), |h, now| {
                            let mut b = h.breakers.get(url)?.state.clone();
                            if ok && b.is_quiet() {
                                return None;
                            }
                            let change = b.record(&cfg, ok, now);
                            Some((b.encode(), change))
                        })
                        .await
                        .flatten();
                    if let Some((from, to)) = changed {
                        log_breaker(&key.endpoint, url, from, to);
                        if from == Phase::Closed && to == Phase::Open {
                            // A breaker-forced pause goes to the audit trail
                            // (re-openings after a failed probe do not).
                            let change = crate::audit::Change::Paused {
                                reason: format!("circuit breaker of URL {} opened", url + 1),
                            };
                            let audit = self.queue.append_audit(&key.endpoint, "worker", &change);
                            if let Err(e) = self.bounded("audit", audit).await {
                                tracing::debug!(error = %e, "recording the pause in the audit trail failed");
                            }
                        }
                    }
                }
                (Effect::Throttled { retry_after }, Some(r)) => {
                    let Some(limit) = r.endpoint.rate_limit else {
                        continue;
                    };
                    let rate = self
                        .update(&r.endpoint, LIMITER, |h, now| {
                            let mut l = h.limiter.as_ref()?.0.clone();
                            l.throttled(&limit, now, *retry_after);
                            Some((l.encode(), l.rate))
                        })
                        .await;
                    metrics::counter!("hookgate_sender_throttled_total", "endpoint" => key.endpoint.clone())
                        .increment(1);
                    if let Some(rate) = rate {
                        tracing::info!(
                            rate,
                            ?retry_after,
                            "receiver throttled; rate limit lowered"
                        );
                        metrics::gauge!("hookgate_sender_rate_limit", "endpoint" => key.endpoint.clone())
                            .set(rate);
                    }
                }
                (Effect::Sped, Some(r)) => {
                    let Some(limit) = r.endpoint.rate_limit else {
                        continue;
                    };
                    let rate = self
                        .update(&r.endpoint, LIMITER, |h, _| {
                            let mut l = h.limiter.as_ref()?.0.clone();
                            l.succeeded(&limit).then(|| (l.encode(), l.rate))
                        })
                        .await;
                    if let Some(rate) = rate {
                        metrics::gauge!("hookgate_sender_rate_limit", "endpoint" => key.endpoint.clone())
                            .set(rate);
                    }
                }
                (Effect::Streak { ok }, Some(r)) => {
                    let Some(rule) = r.endpoint.auto_disable else {
                        continue;
                    };
                    let ok = *ok;
                    let disable = self
                        .update(&r.endpoint, STREAK, |h, now| {
                            let mut s = h.streak.0;
                            if ok && s == crate::lifecycle::FailureStreak::default() {
                                return None;
                            }
                            let disable = s.record(&rule, ok, now);
                            Some((s.encode(), disable))
                        })
                        .await
                        .unwrap_or(false);
                    if disable {
                        self.disable(&key.endpoint, "failing").await;
                    }
                }
                _ => {}
            }
        }
    }

    /// Disable `endpoint` (`why`: `gone` or `failing`); its messages are held from now on.
    async fn disable(&self, endpoint: &str, why: &'static str) {
        match self
            .bounded(
                "disable endpoint",
                self.queue.set_endpoint_disabled(endpoint, true),
            )
            .await
        {
            Ok(()) => {
                let text = if why == "gone" {
                    "receiver answered 410 Gone"
                } else {
                    "failing continuously"
                };
                tracing::warn!(
                    reason = why,
                    "endpoint disabled ({text}); its messages are held until it is enabled"
                );
                let change = crate::audit::Change::Disabled {
                    reason: text.into(),
                };
                let audit = self.queue.append_audit(endpoint, "worker", &change);
                if let Err(e) = self.bounded("audit", audit).await {
                    tracing::warn!(error = %e, "recording the disable in the audit trail failed");
                }
                metrics::counter!("hookgate_sender_endpoints_disabled_total", "endpoint" => endpoint.to_owned(), "reason" => why)
                    .increment(1);
            }
            Err(e) => tracing::warn!(error = %e, "disabling endpoint failed"),
        }
        self.forget_endpoint(endpoint);
    }

    fn report(&self, report: &AttemptReport) {
        if let Some(f) = &self.on_attempt {
            f(report);
        }
    }
}

/// Outcome metrics and logs: counted only when the queue accepted the outcome.
fn emit(key: &DeliveryKey, transition: &Transition, recorded: bool) {
    let label = key.endpoint.clone();
    if !recorded {
        tracing::warn!("lease lost before the outcome was recorded");
        metrics::counter!("hookgate_sender_lease_lost_total", "endpoint" => label).increment(1);
        return;
    }
    match transition {
        Transition::Delivered => {
            metrics::counter!("hookgate_sender_delivered_total", "endpoint" => label).increment(1);
        }
        Transition::Retry { .. } => {
            metrics::counter!("hookgate_sender_retries_scheduled_total", "endpoint" => label)
                .increment(1);
        }
        Transition::Dead(reason) => {
            tracing::info!(%reason, "dead-lettered");
            metrics::counter!("hookgate_sender_dead_lettered_total", "endpoint" => label)
                .increment(1);
        }
        Transition::Defer { reason, delay } => {
            tracing::debug!(?reason, ?delay, "deferred without spending an attempt");
            let reason = match reason {
                crate::queue::DeferReason::RateLimited => "rate_limited",
                crate::queue::DeferReason::CircuitOpen => "circuit_open",
                _ => "busy",
            };
            metrics::counter!("hookgate_sender_deferred_total", "endpoint" => label, "reason" => reason)
                .increment(1);
        }
        Transition::Hold => {
            metrics::counter!("hookgate_sender_held_total", "endpoint" => label).increment(1);
        }
        _ => {}
    }
}

/// Log and count a breaker transition of URL `url` of `endpoint`.
fn log_breaker(endpoint: &str, url: usize, from: Phase, to: Phase) {
    let level = match to {
        Phase::Open => 2.0,
        Phase::HalfOpen => 1.0,
        Phase::Closed => 0.0,
    };
    if to == Phase::Open {
        tracing::warn!(
            url_index = url,
            from = from.as_str(),
            to = to.as_str(),
            "circuit breaker"
        );
    } else {
        tracing::info!(
            url_index = url,
            from = from.as_str(),
            to = to.as_str(),
            "circuit breaker"
        );
    }
    metrics::counter!(
        "hookgate_sender_breaker_transitions_total",
        "endpoint" => endpoint.to_owned(),
        "url" => url.to_string(),
        "to" => to.as_str()
    )
    .increment(1);
    metrics::gauge!(
        "hookgate_sender_breaker_state",
        "endpoint" => endpoint.to_owned(),
        "url" => url.to_string()
    )
    .set(level);
}

fn log_join(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res {
        if e.is_panic() {
            tracing::error!("a delivery task panicked; its lease will expire");
        }
    }
}
