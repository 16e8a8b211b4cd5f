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
//! - The lease is longer than the longest attempt (checked by
//!   [`WorkerBuilder::build`]), so one delivery is never attempted twice at once.
//! - Every outcome is written to the queue ([`Queue::retry_later`],
//!   [`Queue::delivered`], [`Queue::dead_letter`]); the next attempt time is
//!   persisted, never slept on. A worker that dies loses nothing: its leases
//!   expire and another worker takes them (delivery is at least once; the
//!   receiver deduplicates on the message id).
//! - [`WorkerHandle::shutdown`] stops leasing, lets in-flight attempts finish
//!   within a grace period, then aborts the rest and releases their leases.
//!
//! # Metrics
//!
//! Through the [`metrics`] facade:
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `hookgate_sender_attempts_total` | counter | `endpoint`, `outcome` (`delivered`, `retry`, `permanent`, `gone`) | attempts made |
//! | `hookgate_sender_attempt_duration_seconds` | histogram | `endpoint` | time to the response or failure |
//! | `hookgate_sender_delivered_total` | counter | `endpoint` | deliveries that succeeded |
//! | `hookgate_sender_retries_scheduled_total` | counter | `endpoint` | retries written to the queue |
//! | `hookgate_sender_dead_lettered_total` | counter | `endpoint` | deliveries moved to the DLQ |
//! | `hookgate_sender_in_flight` | gauge | | attempts running in this worker |
//! | `hookgate_sender_queue_pending` | gauge | | deliveries waiting (from [`Queue::stats`], every stats interval) |
//! | `hookgate_sender_queue_leased` | gauge | | deliveries leased by some worker |
//! | `hookgate_sender_dlq_size` | gauge | | dead letters |
//!
//! Endpoint ids are label values: keep them to a bounded set.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rand::{rngs::StdRng, SeedableRng};
use tokio::{
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tracing::Instrument;

use crate::{
    delivery::{DeliveryClient, Prepared},
    now_ms,
    outcome::{Class, Classifier},
    queue::{Attempt, DeliveryKey, LeaseToken, Leased, Queue, QueueError},
    retry::{RetryDecision, RetryInput, RetryPolicy, RetryPolicyError},
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
/// How much longer than the longest attempt a lease must be.
pub const LEASE_MARGIN: Duration = Duration::from_secs(1);

/// A worker could not be built from its settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerBuildError {
    /// The lease is not longer than the longest attempt plus [`LEASE_MARGIN`].
    #[error("lease ({lease:?}) must exceed the request timeout ({timeout:?}) by at least {LEASE_MARGIN:?}")]
    LeaseTooShort {
        /// The lease.
        lease: Duration,
        /// The request timeout.
        timeout: Duration,
    },
    /// Concurrency, batch size or an interval is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The retry policy is invalid.
    #[error(transparent)]
    Retry(#[from] RetryPolicyError),
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Next {
    /// Delivered; removed from the queue.
    Delivered,
    /// Scheduled again.
    RetryAt {
        /// Unix milliseconds.
        at_ms: i64,
        /// The wait.
        delay: Duration,
    },
    /// Moved to the dead-letter queue.
    DeadLettered {
        /// Why.
        reason: String,
    },
}

/// One attempt, as reported to [`WorkerBuilder::with_on_attempt`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AttemptReport {
    /// Which delivery.
    pub key: DeliveryKey,
    /// 1-based attempt number.
    pub number: u32,
    /// The attempt, or `None` when none was made (unknown, invalid or disabled endpoint).
    pub attempt: Option<Attempt>,
    /// The attempt's class, when one was made.
    pub class: Option<Class>,
    /// The address connected to, when known.
    pub remote_addr: Option<SocketAddr>,
    /// What follows.
    pub next: Next,
    /// Whether the queue accepted the outcome (`false`: the lease was lost,
    /// e.g. it expired and another worker took the delivery).
    pub recorded: bool,
}

type OnAttempt = Arc<dyn Fn(&AttemptReport) + Send + Sync>;

/// Settings of a [`Worker`]; see [`Worker::builder`].
#[must_use]
pub struct WorkerBuilder {
    queue: Arc<dyn Queue>,
    concurrency: usize,
    batch_size: Option<usize>,
    lease: Duration,
    max_request_timeout: Duration,
    poll_interval: Duration,
    stats_interval: Duration,
    endpoint_cache_ttl: Duration,
    retry: RetryPolicy,
    classifier: Classifier,
    ssrf: SsrfPolicy,
    resolver: Arc<dyn Resolver>,
    on_attempt: Option<OnAttempt>,
    seed: Option<u64>,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("concurrency", &self.concurrency)
            .field("batch_size", &self.batch_size)
            .field("lease", &self.lease)
            .field("max_request_timeout", &self.max_request_timeout)
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

    /// Lease per delivery (default 60 s). Must exceed the request timeout by
    /// [`LEASE_MARGIN`]; it is also how long a crashed worker's deliveries
    /// wait before another worker takes them.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Longest attempt (default 30 s): endpoint timeouts above it are cut to it.
    pub fn with_max_request_timeout(mut self, timeout: Duration) -> Self {
        self.max_request_timeout = timeout;
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

    /// Check the settings and build the worker.
    ///
    /// # Errors
    /// A lease not longer than the request timeout plus [`LEASE_MARGIN`], a
    /// zero concurrency, batch size or interval, or an invalid retry policy.
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
        if self.lease < self.max_request_timeout.saturating_add(LEASE_MARGIN) {
            return Err(WorkerBuildError::LeaseTooShort {
                lease: self.lease,
                timeout: self.max_request_timeout,
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
                poll_interval: self.poll_interval,
                stats_interval: self.stats_interval,
                endpoint_ttl: self.endpoint_cache_ttl,
                endpoints: Mutex::new(HashMap::new()),
                on_attempt: self.on_attempt,
                rng: Mutex::new(rng),
                in_flight: Mutex::new(HashMap::new()),
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
    poll_interval: Duration,
    stats_interval: Duration,
    endpoint_ttl: Duration,
    endpoints: Mutex<HashMap<String, (Instant, EndpointState)>>,
    on_attempt: Option<OnAttempt>,
    rng: Mutex<StdRng>,
    /// Leases held by running attempts, released on shutdown.
    in_flight: Mutex<HashMap<DeliveryKey, LeaseToken>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("concurrency", &self.concurrency)
            .field("batch", &self.batch)
            .field("lease", &self.lease)
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
    /// the rest and release their leases.
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
            poll_interval: DEFAULT_POLL_INTERVAL,
            stats_interval: Duration::from_secs(15),
            endpoint_cache_ttl: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            classifier: Classifier::default(),
            ssrf: SsrfPolicy::default(),
            resolver: Arc::new(SystemResolver),
            on_attempt: None,
            seed: None,
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
            let idle = match self.queue.lease(permits.len(), self.lease).await {
                Ok(jobs) => {
                    let idle = jobs.is_empty();
                    for (leased, permit) in jobs.into_iter().zip(permits.drain(..)) {
                        self.lock_in_flight()
                            .insert(leased.job.key.clone(), leased.token.clone());
                        tasks.spawn(self.clone().process(leased, permit));
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
        let remaining: Vec<_> = self.lock_in_flight().drain().collect();
        for (key, token) in remaining {
            match self.queue.release(&key, &token).await {
                Ok(true) => report.released += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, message_id = %key.message_id, "release failed; the lease will expire");
                }
            }
        }
        tracing::debug!(?report, "hookgate sender worker stopped");
        report
    }

    async fn stats_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.stats_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.queue.stats().await {
                Ok(s) => {
                    metrics::gauge!("hookgate_sender_queue_pending").set(s.pending as f64);
                    metrics::gauge!("hookgate_sender_queue_leased").set(s.leased as f64);
                    metrics::gauge!("hookgate_sender_dlq_size").set(s.dead as f64);
                }
                Err(e) => tracing::debug!(error = %e, "queue stats failed"),
            }
        }
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<DeliveryKey, LeaseToken>> {
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
        let state = match self.queue.get_endpoint(id).await? {
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

    async fn process(self: Arc<Self>, leased: Leased, permit: OwnedSemaphorePermit) {
        let key = leased.job.key.clone();
        let span = tracing::info_span!(
            "hookgate_sender.deliver",
            message_id = %key.message_id,
            endpoint = %key.endpoint,
            attempt = leased.job.attempts + 1,
        );
        let gauge = InFlightGauge::new();
        self.deliver(leased).instrument(span).await;
        // Only a finished attempt leaves the in-flight map: an aborted one
        // stays there so that shutdown releases its lease.
        self.lock_in_flight().remove(&key);
        drop(gauge);
        drop(permit);
    }

    async fn deliver(&self, leased: Leased) {
        let Leased { job, token } = leased;
        let key = &job.key;
        let number = job.attempts.saturating_add(1);
        let endpoint_label = key.endpoint.clone();

        let prepared = match self.endpoint(&key.endpoint).await {
            Ok(EndpointState::Ready(p)) if !p.endpoint.disabled => p,
            Ok(state) => {
                let reason = match state {
                    EndpointState::Missing => "unknown endpoint".to_owned(),
                    EndpointState::Invalid(e) => format!("invalid endpoint: {e}"),
                    EndpointState::Ready(_) => "endpoint disabled".to_owned(),
                };
                tracing::warn!(%reason, "not attempted; dead-lettering");
                let recorded = self.record_dead(key, &token, None, &reason).await;
                self.report(AttemptReport {
                    key: key.clone(),
                    number,
                    attempt: None,
                    class: None,
                    remote_addr: None,
                    next: Next::DeadLettered { reason },
                    recorded,
                });
                return;
            }
            Err(e) => {
                // Leave the lease to expire: the delivery comes back later.
                tracing::warn!(error = %e, "cannot load endpoint; will retry after the lease");
                return;
            }
        };

        let result = self.client.attempt_prepared(&prepared, &job.message).await;
        let class = result.class;
        metrics::counter!(
            "hookgate_sender_attempts_total",
            "endpoint" => endpoint_label.clone(),
            "outcome" => class.as_str()
        )
        .increment(1);
        metrics::histogram!(
            "hookgate_sender_attempt_duration_seconds",
            "endpoint" => endpoint_label.clone()
        )
        .record(result.attempt.latency_ms as f64 / 1000.0);
        tracing::debug!(
            status = result.attempt.status,
            latency_ms = result.attempt.latency_ms,
            error = result.attempt.error.as_deref(),
            class = class.as_str(),
            remote_addr = ?result.remote_addr,
            "attempt"
        );

        let reason = result.reason.clone().unwrap_or_default();
        let attempt = result.attempt.clone();
        let (next, recorded) = match class {
            Class::Delivered => {
                let recorded = match self.queue.delivered(key, &token, attempt).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "recording delivery failed; it may be sent again");
                        false
                    }
                };
                metrics::counter!("hookgate_sender_delivered_total", "endpoint" => endpoint_label)
                    .increment(1);
                (Next::Delivered, recorded)
            }
            Class::Retry => {
                let input = RetryInput {
                    attempts_made: number,
                    now_ms: now_ms(),
                    created_at_ms: job.message.created_at_ms,
                    retry_after: result.retry_after,
                };
                let decision = {
                    let mut rng = self
                        .rng
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    self.retry.decide(&input, &mut *rng)
                };
                match decision {
                    RetryDecision::RetryAt { at_ms, delay } => {
                        let recorded = match self
                            .queue
                            .retry_later(key, &token, attempt, at_ms)
                            .await
                        {
                            Ok(r) => r,
                            Err(e) => {
                                tracing::warn!(error = %e, "scheduling retry failed; retrying after the lease");
                                false
                            }
                        };
                        metrics::counter!("hookgate_sender_retries_scheduled_total", "endpoint" => endpoint_label)
                            .increment(1);
                        (Next::RetryAt { at_ms, delay }, recorded)
                    }
                    RetryDecision::GiveUp(why) => {
                        let reason = format!("{why} (last: {reason})");
                        let recorded = self.record_dead(key, &token, Some(attempt), &reason).await;
                        (Next::DeadLettered { reason }, recorded)
                    }
                }
            }
            Class::Permanent => {
                let reason = format!("permanent: {reason}");
                let recorded = self.record_dead(key, &token, Some(attempt), &reason).await;
                (Next::DeadLettered { reason }, recorded)
            }
            Class::Gone => {
                if let Err(e) = self.queue.set_endpoint_disabled(&key.endpoint, true).await {
                    tracing::warn!(error = %e, "disabling endpoint failed");
                }
                self.forget_endpoint(&key.endpoint);
                tracing::warn!("receiver answered 410 Gone; endpoint disabled");
                let reason = format!("gone: {reason}; endpoint disabled");
                let recorded = self.record_dead(key, &token, Some(attempt), &reason).await;
                (Next::DeadLettered { reason }, recorded)
            }
        };
        if !recorded {
            tracing::warn!("lease lost before the outcome was recorded");
        }
        self.report(AttemptReport {
            key: key.clone(),
            number,
            attempt: Some(result.attempt),
            class: Some(class),
            remote_addr: result.remote_addr,
            next,
            recorded,
        });
    }

    async fn record_dead(
        &self,
        key: &DeliveryKey,
        token: &LeaseToken,
        attempt: Option<Attempt>,
        reason: &str,
    ) -> bool {
        metrics::counter!("hookgate_sender_dead_lettered_total", "endpoint" => key.endpoint.clone())
            .increment(1);
        tracing::info!(%reason, "dead-lettered");
        match self.queue.dead_letter(key, token, attempt, reason).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "dead-lettering failed; retrying after the lease");
                false
            }
        }
    }

    fn report(&self, report: AttemptReport) {
        if let Some(f) = &self.on_attempt {
            f(&report);
        }
    }
}

fn log_join(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res {
        if e.is_panic() {
            tracing::error!("a delivery task panicked; its lease will expire");
        }
    }
}
