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
    decide::{self, Decision, Effect, Happened},
    delivery::{DeliveryClient, Prepared},
    now_ms,
    outcome::{Class, Classifier},
    queue::{
        Attempt, DeadReason, DeliveryKey, Job, LeaseToken, Leased, Queue, QueueError,
        QueueErrorKind, Transition,
    },
    retry::{RetryPolicy, RetryPolicyError},
    ssrf::{Resolver, SsrfPolicy, SystemResolver},
    DEFAULT_TIMEOUT,
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
    Ready(Arc<Prepared>),
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
    /// (`hookgate send`, `dlq replay`).
    pub async fn deliver_once(&self, leased: Leased) -> AttemptReport {
        let span = self.shared.span(&leased.job);
        let report = self.shared.handle(leased).instrument(span).await;
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
            Some(ep) => match Prepared::new(ep) {
                Ok(p) => EndpointState::Ready(Arc::new(p)),
                Err(e) => EndpointState::Invalid(e.to_string()),
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
            // Which of the endpoint's URLs was tried (0 until failover lands).
            url_index = 0u64,
            status = tracing::field::Empty,
            outcome = tracing::field::Empty,
        )
    }

    async fn process(self: Arc<Self>, id: u64, leased: Leased, permit: OwnedSemaphorePermit) {
        let span = self.span(&leased.job);
        let gauge = InFlightGauge::new();
        let report = self.handle(leased).instrument(span.clone()).await;
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
    async fn handle(&self, leased: Leased) -> AttemptReport {
        let Leased { job, token } = leased;
        let (happened, decision) = if decide::may_attempt(&job, &self.retry) {
            let happened = self.attempt(&job).await;
            let decision = {
                let mut rng = self
                    .rng
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                decide::decide(&job, &happened, &self.retry, (self.clock)(), &mut *rng)
            };
            (Some(happened), decision)
        } else {
            (None, decide::over_budget(&job))
        };
        self.apply(&job.key, &decision).await;
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

    /// Load the endpoint and make the attempt.
    async fn attempt(&self, job: &Job) -> Happened {
        let prepared = match self.endpoint(&job.key.endpoint).await {
            Ok(EndpointState::Ready(p)) if !p.endpoint.disabled => p,
            Ok(EndpointState::Ready(_)) => return Happened::EndpointDisabled,
            Ok(EndpointState::Missing) => return Happened::EndpointMissing,
            Ok(EndpointState::Invalid(e)) => return Happened::EndpointInvalid(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot load endpoint");
                return Happened::StoreFailed(format!("endpoint not loaded: {e}"));
            }
        };
        let result = self.client.attempt_prepared(&prepared, &job.message).await;
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
        Happened::Attempted(result)
    }

    async fn apply(&self, key: &DeliveryKey, decision: &Decision) {
        for effect in &decision.effects {
            match effect {
                Effect::DisableEndpoint => {
                    match self
                        .bounded(
                            "disable endpoint",
                            self.queue.set_endpoint_disabled(&key.endpoint, true),
                        )
                        .await
                    {
                        Ok(()) => {
                            tracing::warn!("receiver answered 410 Gone; endpoint disabled");
                            let change = crate::audit::Change::Disabled {
                                reason: "receiver answered 410 Gone".into(),
                            };
                            let audit = self.queue.append_audit(&key.endpoint, "worker", &change);
                            if let Err(e) = self.bounded("audit", audit).await {
                                tracing::warn!(error = %e, "recording the disable in the audit trail failed");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "disabling endpoint failed"),
                    }
                    self.forget_endpoint(&key.endpoint);
                }
            }
        }
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
        _ => {}
    }
}

fn log_join(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res {
        if e.is_panic() {
            tracing::error!("a delivery task panicked; its lease will expire");
        }
    }
}
