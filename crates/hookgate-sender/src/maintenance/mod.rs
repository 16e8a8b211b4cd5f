//! Maintenance as one trait and one runner: the [`Pruner`] (retention of
//! delivered keys, dead letters and their attempt history) and the
//! [`Rescuer`] (expired leases through the retry policy), each a [`Task`]
//! whose [`run_once`](Task::run_once) does one bounded batch and returns a
//! [`Report`]. A [`Runner`] runs its tasks every interval (with jitter) while
//! it holds a [`LeaderLock`], so one process of many does the work.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::{sync::Arc, time::Duration};
//! use hookgate_sender::{maintenance::{Pruner, Rescuer, Runner, NoLock}, retry::RetryPolicy};
//! use hookgate_sender::{MemoryQueue, Queue};
//!
//! let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
//! let runner = Runner::new(Arc::new(NoLock))
//!     .with_task(Arc::new(Pruner::new(queue.clone()).with_dead_retention(Duration::from_secs(30 * 86_400))))
//!     .with_task(Arc::new(Rescuer::new(queue.clone(), RetryPolicy::default())))
//!     .with_interval(Duration::from_secs(60));
//! let reports = runner.run_once().await; // or runner.spawn()
//! assert_eq!(reports.len(), 2);
//! # });
//! ```
//!
//! # Metrics
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `hookgate_sender_maintenance_runs_total` | counter | `task`, `result` (`ok`, `error`) | batches run |
//! | `hookgate_sender_maintenance_items_total` | counter | `task` | items acted on (pruned, rescued) |

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::{Rng as _, SeedableRng as _};
use tokio::sync::watch;

use crate::{
    decide::{self, Happened},
    now_ms,
    queue::{BoxFuture, Queue, QueueError},
    retry::RetryPolicy,
};

/// What one [`Task::run_once`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Items acted on.
    pub acted: u64,
    /// The batch was full: there may be more to do now.
    pub more: bool,
}

impl Report {
    /// A report of `acted` items; `more` when the batch was full. For
    /// [`Task`]s written outside this crate (the receiver's dedup sweep).
    #[must_use]
    pub fn new(acted: u64, more: bool) -> Self {
        Self { acted, more }
    }
}

/// One maintenance job.
pub trait Task: Send + Sync {
    /// A short name, for logs and metric labels.
    fn name(&self) -> &'static str;
    /// Do one bounded batch.
    fn run_once(&self) -> BoxFuture<'_, Result<Report, QueueError>>;
}

/// Leadership among processes sharing a store: only the holder runs the
/// maintenance tasks.
pub trait LeaderLock: Send + Sync {
    /// Take or keep the lock; `true` while this process holds it.
    fn try_lead(&self) -> BoxFuture<'_, Result<bool, QueueError>>;
}

/// No lock: every runner leads (one process, the memory queue, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLock;

impl LeaderLock for NoLock {
    fn try_lead(&self) -> BoxFuture<'_, Result<bool, QueueError>> {
        Box::pin(std::future::ready(Ok(true)))
    }
}

/// Default batch size of the built-in tasks.
pub const DEFAULT_BATCH: usize = 500;

/// Deletes delivered keys past the queue's retention window and, when a
/// dead-letter retention is set, older dead letters, with their history
/// ([`Queue::prune`]).
pub struct Pruner {
    queue: Arc<dyn Queue>,
    dead_retention: Option<Duration>,
    audit_retention: Option<Duration>,
    batch: usize,
}

impl fmt::Debug for Pruner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pruner")
            .field("dead_retention", &self.dead_retention)
            .field("audit_retention", &self.audit_retention)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl Pruner {
    /// A pruner for `queue`; dead letters are kept until set otherwise.
    #[must_use]
    pub fn new(queue: Arc<dyn Queue>) -> Self {
        Self {
            queue,
            dead_retention: None,
            audit_retention: None,
            batch: DEFAULT_BATCH,
        }
    }

    /// Delete dead letters filed longer ago than `retention`.
    #[must_use]
    pub fn with_dead_retention(mut self, retention: Duration) -> Self {
        self.dead_retention = Some(retention);
        self
    }

    /// Delete endpoint audit trail entries ([`crate::audit`]) recorded
    /// longer ago than `retention` (kept until set otherwise).
    #[must_use]
    pub fn with_audit_retention(mut self, retention: Duration) -> Self {
        self.audit_retention = Some(retention);
        self
    }

    /// Most keys deleted per run (default [`DEFAULT_BATCH`]).
    #[must_use]
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }
}

impl Task for Pruner {
    fn name(&self) -> &'static str {
        "pruner"
    }

    fn run_once(&self) -> BoxFuture<'_, Result<Report, QueueError>> {
        Box::pin(async move {
            let n = self.queue.prune(self.dead_retention, self.batch).await?;
            let audit = match self.audit_retention {
                Some(retention) => self.queue.prune_audit(retention, self.batch).await?,
                None => 0,
            };
            Ok(Report {
                acted: n + audit,
                more: n >= self.batch as u64 || audit >= self.batch as u64,
            })
        })
    }
}

/// Runs deliveries whose lease expired without an outcome (a crashed or
/// stalled worker) through the retry policy ([`Queue::rescue`]): a retry
/// after the policy's backoff, or a dead letter once the attempts counted
/// at lease time reach the budget. Bounds crash loops without waiting for a
/// worker to lease the delivery again.
pub struct Rescuer {
    queue: Arc<dyn Queue>,
    policy: RetryPolicy,
    batch: usize,
    rng: Mutex<rand::rngs::StdRng>,
}

impl fmt::Debug for Rescuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rescuer")
            .field("policy", &self.policy)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl Rescuer {
    /// A rescuer for `queue` applying `policy` (use the workers' policy).
    #[must_use]
    pub fn new(queue: Arc<dyn Queue>, policy: RetryPolicy) -> Self {
        Self {
            queue,
            policy,
            batch: DEFAULT_BATCH,
            rng: Mutex::new(rand::rngs::StdRng::from_entropy()),
        }
    }

    /// Most deliveries rescued per run (default [`DEFAULT_BATCH`]).
    #[must_use]
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }
}

/// How long the rescuer holds a rescued delivery before settling it.
const RESCUE_LEASE: Duration = Duration::from_secs(30);

impl Task for Rescuer {
    fn name(&self) -> &'static str {
        "rescuer"
    }

    fn run_once(&self) -> BoxFuture<'_, Result<Report, QueueError>> {
        Box::pin(async move {
            let rescued = self.queue.rescue(self.batch, RESCUE_LEASE).await?;
            let more = rescued.len() >= self.batch;
            let mut acted = 0;
            for leased in rescued {
                let happened = Happened::LeaseExpired;
                let decision = {
                    let mut rng = self
                        .rng
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    decide::decide(&leased.job, &happened, &self.policy, now_ms(), &mut *rng)
                };
                if self
                    .queue
                    .settle(&leased.job.key, &leased.token, None, decision.transition)
                    .await?
                {
                    acted += 1;
                }
            }
            Ok(Report { acted, more })
        })
    }
}

/// Releases the deliveries held for endpoints that are enabled.
///
/// [`Sender::enable_endpoint`](crate::Sender::enable_endpoint) releases what
/// is held when it runs; a worker that was holding a delivery at that very
/// moment (it read the endpoint as disabled just before) settles it as held
/// afterwards, and without this task it would wait for the next enable. One
/// run lists the endpoints and releases the held deliveries of every enabled
/// one (a no-op for most).
pub struct Healer {
    queue: Arc<dyn Queue>,
}

impl fmt::Debug for Healer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Healer").finish_non_exhaustive()
    }
}

impl Healer {
    /// A healer for `queue`.
    #[must_use]
    pub fn new(queue: Arc<dyn Queue>) -> Self {
        Self { queue }
    }
}

impl Task for Healer {
    fn name(&self) -> &'static str {
        "healer"
    }

    fn run_once(&self) -> BoxFuture<'_, Result<Report, QueueError>> {
        Box::pin(async move {
            let mut acted = 0;
            for endpoint in self.queue.list_endpoints().await? {
                if !endpoint.disabled {
                    acted += self.queue.release_held(&endpoint.id).await?;
                }
            }
            Ok(Report { acted, more: false })
        })
    }
}

/// Runs [`Task`]s every interval while holding the [`LeaderLock`].
#[must_use]
pub struct Runner {
    tasks: Vec<Arc<dyn Task>>,
    lock: Arc<dyn LeaderLock>,
    interval: Duration,
    jitter: Duration,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field(
                "tasks",
                &self.tasks.iter().map(|t| t.name()).collect::<Vec<_>>(),
            )
            .field("interval", &self.interval)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

/// One task's outcome in a [`Runner::run_once`].
#[derive(Debug)]
#[non_exhaustive]
pub struct TaskReport {
    /// The task's name.
    pub task: &'static str,
    /// What it did, or why it failed.
    pub result: Result<Report, QueueError>,
}

impl Runner {
    /// A runner with no tasks, leading while `lock` says so; every minute,
    /// jitter up to 10 s.
    pub fn new(lock: Arc<dyn LeaderLock>) -> Self {
        Self {
            tasks: Vec::new(),
            lock,
            interval: Duration::from_secs(60),
            jitter: Duration::from_secs(10),
        }
    }

    /// Add a task.
    pub fn with_task(mut self, task: Arc<dyn Task>) -> Self {
        self.tasks.push(task);
        self
    }

    /// Pause between runs (default 60 s).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Up to this much random extra pause (default 10 s), so many
    /// processes do not poll the store in step.
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Run every task once if this process leads; an empty list otherwise.
    pub async fn run_once(&self) -> Vec<TaskReport> {
        match self.lock.try_lead().await {
            Ok(true) => {}
            Ok(false) => return Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "maintenance: leader lock failed");
                return Vec::new();
            }
        }
        let mut out = Vec::with_capacity(self.tasks.len());
        for task in &self.tasks {
            let result = task.run_once().await;
            let label = if result.is_ok() { "ok" } else { "error" };
            metrics::counter!("hookgate_sender_maintenance_runs_total", "task" => task.name(), "result" => label)
                .increment(1);
            match &result {
                Ok(r) => {
                    metrics::counter!("hookgate_sender_maintenance_items_total", "task" => task.name())
                        .increment(r.acted);
                    if r.acted > 0 {
                        tracing::debug!(task = task.name(), acted = r.acted, "maintenance");
                    }
                }
                Err(e) => tracing::warn!(task = task.name(), error = %e, "maintenance task failed"),
            }
            out.push(TaskReport {
                task: task.name(),
                result,
            });
        }
        out
    }

    /// Run on the tokio runtime until the handle is stopped or dropped.
    #[must_use = "dropping the handle stops the runner"]
    pub fn spawn(self) -> RunnerHandle {
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let reports = self.run_once().await;
                let more = reports
                    .iter()
                    .any(|r| r.result.as_ref().is_ok_and(|r| r.more));
                let pause = if more {
                    Duration::ZERO
                } else {
                    let jitter_ms = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
                    self.interval
                        + Duration::from_millis(rand::thread_rng().gen_range(0..=jitter_ms))
                };
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = rx.changed() => return,
                }
            }
        });
        RunnerHandle { stop, task }
    }
}

/// Stops a spawned [`Runner`] when [`stop`](Self::stop)ped or dropped.
#[derive(Debug)]
pub struct RunnerHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunnerHandle {
    /// Stop after the current run.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
