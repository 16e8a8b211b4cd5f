//! In-memory queue: for tests, the demo and single-process use.
//!
//! Everything lives in one process behind a mutex; nothing survives a
//! restart. States, leasing, fencing tokens and lease expiry behave exactly
//! as in the durable backends, so tests written against it hold for them too.
//! Its clock is injectable ([`MemoryQueue::with_clock`]), so tests of
//! delays and expiry need not sleep.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use super::{
    delay_ms, Attempt, BoxFuture, DeadLetter, DeadReason, DeliveryKey, DeliveryState, DlqFilter,
    Enqueued, Job, LeaseToken, Leased, Page, Queue, QueueError, QueueErrorKind, QueueStats, Result,
    StateRecord, Transition, DEFAULT_DELIVERED_RETENTION,
};
use crate::{now_ms, Endpoint, Message};

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// In-memory queue for tests, the demo and single-process use.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use hookgate_sender::{queue::Queue, MemoryQueue, Message};
///
/// let queue = MemoryQueue::new();
/// queue.enqueue("ep", &Message::new("order.paid", r#"{"n":1}"#)).await?;
/// let leased = queue.lease(10, Duration::from_secs(30)).await?;
/// assert_eq!(leased.len(), 1);
/// assert_eq!(leased[0].job.attempts, 1); // counted at lease
/// # Ok::<(), hookgate_sender::queue::QueueError>(())
/// # }).unwrap();
/// ```
///
/// The clock is the system clock ([`now_ms`]) unless
/// [`with_clock`](Self::with_clock) sets another; lease expiry is checked
/// when [`lease`](Queue::lease) runs. Delivered keys are forgotten after the
/// retention window ([`with_delivered_retention`](Self::with_delivered_retention)),
/// checked when the key is enqueued again.
pub struct MemoryQueue {
    inner: Mutex<Inner>,
    tokens: AtomicU64,
    clock: Clock,
    retention: Duration,
    /// The audit trail, oldest first.
    audit: Mutex<Vec<crate::audit::AuditEntry>>,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            tokens: AtomicU64::new(0),
            clock: Arc::new(now_ms),
            retention: DEFAULT_DELIVERED_RETENTION,
            audit: Mutex::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    endpoints: HashMap<String, Endpoint>,
    entries: HashMap<DeliveryKey, Entry>,
    /// Scheduled entries by due time, and leased ones by lease expiry (an
    /// expired lease is leasable again).
    ready: BTreeSet<(i64, DeliveryKey)>,
    /// Dead letters in listing order.
    dead: BTreeSet<(i64, DeliveryKey)>,
    /// Shared resilience state per endpoint: name → (version, value).
    state: HashMap<String, std::collections::BTreeMap<String, (u64, String)>>,
}

#[derive(Debug)]
struct Entry {
    message: Message,
    state: DeliveryState,
    attempts: u32,
    history: Vec<Attempt>,
    /// Scheduled: due time. Leased: lease expiry.
    next_attempt_ms: i64,
    token: Option<LeaseToken>,
    reason: Option<DeadReason>,
    /// Delivered or dead-lettered at.
    finished_ms: i64,
}

impl MemoryQueue {
    /// An empty queue.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Read the time (Unix milliseconds) from `clock` instead of the system
    /// clock: tests move it forward instead of sleeping.
    ///
    /// ```
    /// use std::sync::{Arc, atomic::{AtomicI64, Ordering}};
    /// let now = Arc::new(AtomicI64::new(1_000));
    /// let clock = now.clone();
    /// let queue = hookgate_sender::MemoryQueue::new()
    ///     .with_clock(move || clock.load(Ordering::SeqCst));
    /// now.fetch_add(60_000, Ordering::SeqCst); // a minute passes
    /// # drop(queue);
    /// ```
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Keep delivered keys this long (default [`DEFAULT_DELIVERED_RETENTION`]).
    #[must_use]
    pub fn with_delivered_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in
        // a way that matters more than losing the queue, so keep going.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn token(&self) -> LeaseToken {
        let n = self.tokens.fetch_add(1, Ordering::Relaxed);
        LeaseToken(format!("{n:x}-{:08x}", rand::random::<u32>()))
    }

    fn lease_sync(&self, max: usize, lease: Duration) -> Vec<Leased> {
        let now = self.now();
        let until = now.saturating_add(delay_ms(lease));
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut out = Vec::new();
        while out.len() < max {
            match inner.ready.first() {
                Some((at, _)) if *at <= now => {}
                _ => break,
            }
            let (due, key) = inner.ready.pop_first().expect("checked non-empty");
            let Some(e) = inner.entries.get_mut(&key) else {
                continue;
            };
            let token = self.token();
            e.state = DeliveryState::Leased;
            e.attempts = e.attempts.saturating_add(1);
            e.next_attempt_ms = until;
            e.token = Some(token.clone());
            inner.ready.insert((until, key.clone()));
            out.push(Leased {
                job: Job {
                    key,
                    message: e.message.clone(),
                    attempts: e.attempts,
                    next_attempt_ms: due,
                },
                token,
            });
        }
        out
    }

    fn lease_one_sync(&self, key: &DeliveryKey, lease: Duration) -> Option<Leased> {
        let now = self.now();
        let until = now.saturating_add(delay_ms(lease));
        let mut inner = self.lock();
        let inner = &mut *inner;
        let e = inner.entries.get_mut(key)?;
        let free = match e.state {
            DeliveryState::Scheduled => true,
            DeliveryState::Leased => e.next_attempt_ms <= now,
            _ => false,
        };
        if !free {
            return None;
        }
        let due = e.next_attempt_ms;
        inner.ready.remove(&(due, key.clone()));
        let token = self.token();
        e.state = DeliveryState::Leased;
        e.attempts = e.attempts.saturating_add(1);
        e.next_attempt_ms = until;
        e.token = Some(token.clone());
        inner.ready.insert((until, key.clone()));
        Some(Leased {
            job: Job {
                key: key.clone(),
                message: e.message.clone(),
                attempts: e.attempts,
                next_attempt_ms: due,
            },
            token,
        })
    }

    fn settle_sync(
        &self,
        key: &DeliveryKey,
        token: &LeaseToken,
        attempt: Option<Attempt>,
        transition: Transition,
    ) -> bool {
        let now = self.now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(e) = inner.entries.get_mut(key) else {
            return false;
        };
        e.history.extend(attempt);
        if e.state != DeliveryState::Leased || e.token.as_ref() != Some(token) {
            return false;
        }
        inner.ready.remove(&(e.next_attempt_ms, key.clone()));
        e.token = None;
        if transition.refunds() {
            e.attempts = e.attempts.saturating_sub(1);
        }
        e.state = transition.target();
        match transition {
            Transition::Delivered => e.finished_ms = now,
            Transition::Retry { delay } | Transition::Defer { delay, .. } => {
                e.next_attempt_ms = now.saturating_add(delay_ms(delay));
                inner.ready.insert((e.next_attempt_ms, key.clone()));
            }
            Transition::Interrupted => {
                e.next_attempt_ms = now;
                inner.ready.insert((now, key.clone()));
            }
            Transition::Hold => e.next_attempt_ms = now,
            Transition::Dead(reason) => {
                e.reason = Some(reason);
                e.finished_ms = now;
                inner.dead.insert((now, key.clone()));
            }
        }
        true
    }

    fn dead_letter_of(key: &DeliveryKey, e: &Entry) -> DeadLetter {
        DeadLetter {
            key: key.clone(),
            message: e.message.clone(),
            attempts: e.history.clone(),
            reason: e.reason.clone().unwrap_or(DeadReason::Other {
                detail: String::new(),
            }),
            dead_at_ms: e.finished_ms,
        }
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

fn matches(filter: &DlqFilter, at: i64, key: &DeliveryKey) -> bool {
    filter.endpoint.as_ref().is_none_or(|e| *e == key.endpoint)
        && filter.since_ms.is_none_or(|s| at >= s)
        && filter.until_ms.is_none_or(|u| at < u)
}

impl Queue for MemoryQueue {
    fn put_endpoint<'a>(&'a self, endpoint: &'a Endpoint) -> BoxFuture<'a, Result<()>> {
        let mut inner = self.lock();
        let mut endpoint = endpoint.clone();
        if let Some(old) = inner.endpoints.get(&endpoint.id) {
            endpoint.disabled = old.disabled;
        }
        inner.endpoints.insert(endpoint.id.clone(), endpoint);
        ready(Ok(()))
    }

    fn get_endpoint<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Endpoint>>> {
        ready(Ok(self.lock().endpoints.get(id).cloned()))
    }

    fn list_endpoints(&self) -> BoxFuture<'_, Result<Vec<Endpoint>>> {
        let mut all: Vec<Endpoint> = self.lock().endpoints.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        ready(Ok(all))
    }

    fn remove_endpoint<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        let mut inner = self.lock();
        inner.state.remove(id);
        ready(Ok(inner.endpoints.remove(id).is_some()))
    }

    fn set_endpoint_disabled<'a>(
        &'a self,
        id: &'a str,
        disabled: bool,
    ) -> BoxFuture<'a, Result<()>> {
        let res = match self.lock().endpoints.get_mut(id) {
            Some(e) => {
                e.disabled = disabled;
                Ok(())
            }
            None => Err(QueueError::new(
                QueueErrorKind::NotFound,
                format!("no endpoint {id:?}"),
            )),
        };
        ready(res)
    }

    fn enqueue<'a>(
        &'a self,
        endpoint: &'a str,
        message: &'a Message,
    ) -> BoxFuture<'a, Result<Enqueued>> {
        let key = DeliveryKey {
            endpoint: endpoint.to_owned(),
            message_id: message.id.clone(),
        };
        let now = self.now();
        let mut inner = self.lock();
        if let Some(e) = inner.entries.get(&key) {
            let expired = e.state == DeliveryState::Delivered
                && e.finished_ms.saturating_add(delay_ms(self.retention)) <= now;
            if !expired {
                return ready(Ok(Enqueued::Exists(e.state)));
            }
        }
        inner.ready.insert((now, key.clone()));
        inner.entries.insert(
            key,
            Entry {
                message: message.clone(),
                state: DeliveryState::Scheduled,
                attempts: 0,
                history: Vec::new(),
                next_attempt_ms: now,
                token: None,
                reason: None,
                finished_ms: 0,
            },
        );
        ready(Ok(Enqueued::New))
    }

    fn lease(&self, max: usize, lease: Duration) -> BoxFuture<'_, Result<Vec<Leased>>> {
        ready(Ok(self.lease_sync(max, lease)))
    }

    fn lease_one<'a>(
        &'a self,
        key: &'a DeliveryKey,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<Leased>>> {
        ready(Ok(self.lease_one_sync(key, lease)))
    }

    fn settle<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
        attempt: Option<Attempt>,
        transition: Transition,
    ) -> BoxFuture<'a, Result<bool>> {
        ready(Ok(self.settle_sync(key, token, attempt, transition)))
    }

    fn release_held<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<u64>> {
        let now = self.now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut n = 0;
        for (key, e) in &mut inner.entries {
            if key.endpoint == endpoint && e.state == DeliveryState::Held {
                e.state = DeliveryState::Scheduled;
                e.next_attempt_ms = now;
                inner.ready.insert((now, key.clone()));
                n += 1;
            }
        }
        ready(Ok(n))
    }

    fn dead_letter_held<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<u64>> {
        let now = self.now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut n = 0;
        for (key, e) in &mut inner.entries {
            if key.endpoint == endpoint && e.state == DeliveryState::Held {
                e.state = DeliveryState::Dead;
                e.reason = Some(DeadReason::EndpointDisabled);
                e.finished_ms = now;
                inner.dead.insert((now, key.clone()));
                n += 1;
            }
        }
        ready(Ok(n))
    }

    fn state<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<Option<DeliveryState>>> {
        ready(Ok(self.lock().entries.get(key).map(|e| e.state)))
    }

    fn add_dead_letter<'a>(&'a self, dead: &'a DeadLetter) -> BoxFuture<'a, Result<bool>> {
        let mut inner = self.lock();
        if let Some(e) = inner.entries.get(&dead.key) {
            if e.state != DeliveryState::Dead {
                return ready(Ok(false));
            }
            let old = (e.finished_ms, dead.key.clone());
            inner.dead.remove(&old);
        }
        inner.dead.insert((dead.dead_at_ms, dead.key.clone()));
        inner.entries.insert(
            dead.key.clone(),
            Entry {
                message: dead.message.clone(),
                state: DeliveryState::Dead,
                attempts: u32::try_from(dead.attempts.len()).unwrap_or(u32::MAX),
                history: dead.attempts.clone(),
                next_attempt_ms: 0,
                token: None,
                reason: Some(dead.reason.clone()),
                finished_ms: dead.dead_at_ms,
            },
        );
        ready(Ok(true))
    }

    fn list_dead<'a>(
        &'a self,
        filter: &'a DlqFilter,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>> {
        use std::ops::Bound;
        let inner = self.lock();
        let start = match &page.after {
            Some(after) => Bound::Excluded(after.clone()),
            None => Bound::Unbounded,
        };
        let out = inner
            .dead
            .range((start, Bound::Unbounded))
            .filter(|(at, k)| matches(filter, *at, k))
            .take(page.limit)
            .filter_map(|(_, k)| inner.entries.get(k).map(|e| Self::dead_letter_of(k, e)))
            .collect();
        ready(Ok(out))
    }

    fn get_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<Option<DeadLetter>>> {
        let inner = self.lock();
        let out = inner
            .entries
            .get(key)
            .filter(|e| e.state == DeliveryState::Dead)
            .map(|e| Self::dead_letter_of(key, e));
        ready(Ok(out))
    }

    fn replay_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<bool>> {
        let now = self.now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(e) = inner.entries.get_mut(key) else {
            return ready(Ok(false));
        };
        if e.state != DeliveryState::Dead {
            return ready(Ok(false));
        }
        inner.dead.remove(&(e.finished_ms, key.clone()));
        e.state = DeliveryState::Scheduled;
        e.attempts = 0;
        e.reason = None;
        e.next_attempt_ms = now;
        inner.ready.insert((now, key.clone()));
        ready(Ok(true))
    }

    fn purge_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<bool>> {
        let mut inner = self.lock();
        let at = match inner.entries.get(key) {
            Some(e) if e.state == DeliveryState::Dead => e.finished_ms,
            _ => return ready(Ok(false)),
        };
        inner.entries.remove(key);
        inner.dead.remove(&(at, key.clone()));
        ready(Ok(true))
    }

    fn prune(&self, dead_retention: Option<Duration>, max: usize) -> BoxFuture<'_, Result<u64>> {
        let now = self.now();
        let delivered_cut = now.saturating_sub(delay_ms(self.retention));
        let dead_cut = dead_retention.map(|d| now.saturating_sub(delay_ms(d)));
        let mut inner = self.lock();
        let gone: Vec<(DeliveryKey, DeliveryState, i64)> = inner
            .entries
            .iter()
            .filter(|(_, e)| match e.state {
                DeliveryState::Delivered => e.finished_ms <= delivered_cut,
                DeliveryState::Dead => dead_cut.is_some_and(|c| e.finished_ms <= c),
                _ => false,
            })
            .take(max)
            .map(|(k, e)| (k.clone(), e.state, e.finished_ms))
            .collect();
        for (key, state, at) in &gone {
            inner.entries.remove(key);
            if *state == DeliveryState::Dead {
                inner.dead.remove(&(*at, key.clone()));
            }
        }
        ready(Ok(gone.len() as u64))
    }

    fn rescue(&self, max: usize, lease: Duration) -> BoxFuture<'_, Result<Vec<Leased>>> {
        let now = self.now();
        let until = now.saturating_add(delay_ms(lease));
        let mut inner = self.lock();
        let inner = &mut *inner;
        let expired: Vec<DeliveryKey> = inner
            .entries
            .iter()
            .filter(|(_, e)| e.state == DeliveryState::Leased && e.next_attempt_ms <= now)
            .take(max)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for key in expired {
            let Some(e) = inner.entries.get_mut(&key) else {
                continue;
            };
            inner.ready.remove(&(e.next_attempt_ms, key.clone()));
            let due = e.next_attempt_ms;
            let token = self.token();
            e.token = Some(token.clone());
            e.next_attempt_ms = until;
            inner.ready.insert((until, key.clone()));
            out.push(Leased {
                job: Job {
                    key,
                    message: e.message.clone(),
                    attempts: e.attempts,
                    next_attempt_ms: due,
                },
                token,
            });
        }
        ready(Ok(out))
    }

    fn endpoint_state<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<Vec<StateRecord>>> {
        let inner = self.lock();
        let records = inner
            .state
            .get(endpoint)
            .map(|m| {
                m.iter()
                    .map(|(name, (version, value))| StateRecord {
                        name: name.clone(),
                        version: *version,
                        value: value.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        ready(Ok(records))
    }

    fn swap_endpoint_state<'a>(
        &'a self,
        endpoint: &'a str,
        name: &'a str,
        expected: u64,
        value: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        let mut inner = self.lock();
        let map = inner.state.entry(endpoint.to_owned()).or_default();
        let current = map.get(name).map_or(0, |(v, _)| *v);
        if current != expected {
            return ready(Ok(false));
        }
        map.insert(name.to_owned(), (expected + 1, value.to_owned()));
        ready(Ok(true))
    }

    fn append_audit<'a>(
        &'a self,
        endpoint: &'a str,
        actor: &'a str,
        change: &'a crate::audit::Change,
    ) -> BoxFuture<'a, Result<()>> {
        let entry = crate::audit::AuditEntry {
            endpoint: endpoint.to_owned(),
            at_ms: self.now(),
            actor: crate::audit::bounded_actor(actor).to_owned(),
            change: change.clone(),
        };
        self.audit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(entry);
        ready(Ok(()))
    }

    fn endpoint_history<'a>(
        &'a self,
        endpoint: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<crate::audit::AuditEntry>>> {
        let audit = self
            .audit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine: Vec<_> = audit.iter().filter(|e| e.endpoint == endpoint).collect();
        let skip = mine.len().saturating_sub(limit);
        ready(Ok(mine.into_iter().skip(skip).cloned().collect()))
    }

    fn prune_audit(&self, retention: Duration, max: usize) -> BoxFuture<'_, Result<u64>> {
        let cutoff = self.now().saturating_sub(delay_ms(retention));
        let mut audit = self
            .audit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Oldest first: the old ones are a prefix.
        let n = audit
            .iter()
            .take(max)
            .take_while(|e| e.at_ms <= cutoff)
            .count();
        audit.drain(..n);
        ready(Ok(n as u64))
    }

    fn stats(&self) -> BoxFuture<'_, Result<QueueStats>> {
        let now = self.now();
        let inner = self.lock();
        let mut s = QueueStats::default();
        for e in inner.entries.values() {
            match e.state {
                DeliveryState::Leased if e.next_attempt_ms > now => s.leased += 1,
                DeliveryState::Scheduled | DeliveryState::Leased => s.scheduled += 1,
                DeliveryState::Held => s.held += 1,
                DeliveryState::Delivered => s.delivered += 1,
                DeliveryState::Dead => s.dead += 1,
            }
        }
        ready(Ok(s))
    }
}
