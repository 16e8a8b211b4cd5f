//! In-memory queue: for tests, the demo and single-process use.
//!
//! Everything lives in one process behind a mutex; nothing survives a
//! restart. Leasing, fencing tokens and lease expiry behave exactly as in the
//! durable backends, so tests written against it hold for them too.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, MutexGuard,
    },
    time::Duration,
};

use super::{
    Attempt, BoxFuture, DeadLetter, DeliveryKey, DlqFilter, Job, LeaseToken, Leased, Page, Queue,
    QueueError, QueueErrorKind, QueueStats, Result,
};
use crate::{now_ms, Endpoint, Message};

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
/// # Ok::<(), hookgate_sender::queue::QueueError>(())
/// # }).unwrap();
/// ```
///
/// The clock is the system clock ([`now_ms`]); lease expiry is checked when
/// [`lease`](Queue::lease) runs. A delivered delivery is forgotten, so
/// enqueueing its key again queues it again (the durable backends may differ).
#[derive(Debug, Default)]
pub struct MemoryQueue {
    inner: Mutex<Inner>,
    tokens: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    endpoints: HashMap<String, Endpoint>,
    jobs: HashMap<DeliveryKey, JobState>,
    /// Unleased jobs by due time.
    due: BTreeSet<(i64, DeliveryKey)>,
    /// Leased jobs by lease expiry.
    leases: BTreeSet<(i64, DeliveryKey)>,
    /// Dead letters in listing order.
    dead: BTreeMap<(i64, DeliveryKey), DeadLetter>,
    /// Dead letter key -> its `dead_at_ms`.
    dead_at: HashMap<DeliveryKey, i64>,
}

#[derive(Debug)]
struct JobState {
    message: Message,
    attempts: u32,
    history: Vec<Attempt>,
    next_attempt_ms: i64,
    lease: Option<(LeaseToken, i64)>,
}

impl MemoryQueue {
    /// An empty queue.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
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
        let now = now_ms();
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let until = now.saturating_add(lease_ms);
        let mut inner = self.lock();
        let inner = &mut *inner;
        // Expired leases go back to the due set.
        while let Some(first) = inner.leases.first() {
            if first.0 > now {
                break;
            }
            let (_, key) = inner.leases.pop_first().expect("checked non-empty");
            if let Some(job) = inner.jobs.get_mut(&key) {
                job.lease = None;
                inner.due.insert((job.next_attempt_ms, key));
            }
        }
        let mut out = Vec::new();
        while out.len() < max {
            match inner.due.first() {
                Some((at, _)) if *at <= now => {}
                _ => break,
            }
            let (_, key) = inner.due.pop_first().expect("checked non-empty");
            let Some(job) = inner.jobs.get_mut(&key) else {
                continue;
            };
            let token = self.token();
            job.lease = Some((token.clone(), until));
            inner.leases.insert((until, key.clone()));
            out.push(Leased {
                job: Job {
                    key,
                    message: job.message.clone(),
                    attempts: job.attempts,
                    next_attempt_ms: job.next_attempt_ms,
                },
                token,
            });
        }
        out
    }

    /// Take the job out of the lease if `token` owns it; returns the job state.
    fn with_owned<T>(
        &self,
        key: &DeliveryKey,
        token: &LeaseToken,
        f: impl FnOnce(&mut Inner, &DeliveryKey) -> T,
    ) -> Option<T> {
        let mut inner = self.lock();
        let owned = inner
            .jobs
            .get(key)
            .and_then(|j| j.lease.as_ref())
            .filter(|(t, _)| t == token)
            .map(|(_, until)| *until);
        let until = owned?;
        inner.leases.remove(&(until, key.clone()));
        if let Some(job) = inner.jobs.get_mut(key) {
            job.lease = None;
        }
        Some(f(&mut inner, key))
    }

    fn insert_dead(inner: &mut Inner, dead: DeadLetter) {
        if let Some(old_at) = inner.dead_at.remove(&dead.key) {
            inner.dead.remove(&(old_at, dead.key.clone()));
        }
        inner.dead_at.insert(dead.key.clone(), dead.dead_at_ms);
        inner.dead.insert((dead.dead_at_ms, dead.key.clone()), dead);
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

fn matches(filter: &DlqFilter, dead: &DeadLetter) -> bool {
    filter
        .endpoint
        .as_ref()
        .is_none_or(|e| *e == dead.key.endpoint)
        && filter.since_ms.is_none_or(|s| dead.dead_at_ms >= s)
        && filter.until_ms.is_none_or(|u| dead.dead_at_ms < u)
}

impl Queue for MemoryQueue {
    fn put_endpoint<'a>(&'a self, endpoint: &'a Endpoint) -> BoxFuture<'a, Result<()>> {
        self.lock()
            .endpoints
            .insert(endpoint.id.clone(), endpoint.clone());
        ready(Ok(()))
    }

    fn get_endpoint<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Endpoint>>> {
        ready(Ok(self.lock().endpoints.get(id).cloned()))
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

    fn enqueue<'a>(&'a self, endpoint: &'a str, message: &'a Message) -> BoxFuture<'a, Result<()>> {
        let key = DeliveryKey {
            endpoint: endpoint.to_owned(),
            message_id: message.id.clone(),
        };
        let mut inner = self.lock();
        if !inner.jobs.contains_key(&key) {
            let now = now_ms();
            inner.due.insert((now, key.clone()));
            inner.jobs.insert(
                key,
                JobState {
                    message: message.clone(),
                    attempts: 0,
                    history: Vec::new(),
                    next_attempt_ms: now,
                    lease: None,
                },
            );
        }
        ready(Ok(()))
    }

    fn lease(&self, max: usize, lease: Duration) -> BoxFuture<'_, Result<Vec<Leased>>> {
        ready(Ok(self.lease_sync(max, lease)))
    }

    fn retry_later<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
        attempt: Attempt,
        next_attempt_ms: i64,
    ) -> BoxFuture<'a, Result<bool>> {
        let done = self.with_owned(key, token, |inner, key| {
            if let Some(job) = inner.jobs.get_mut(key) {
                job.attempts = job.attempts.saturating_add(1);
                job.history.push(attempt);
                job.next_attempt_ms = next_attempt_ms;
                inner.due.insert((next_attempt_ms, key.clone()));
            }
        });
        ready(Ok(done.is_some()))
    }

    fn delivered<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
        _attempt: Attempt,
    ) -> BoxFuture<'a, Result<bool>> {
        let done = self.with_owned(key, token, |inner, key| {
            inner.jobs.remove(key);
        });
        ready(Ok(done.is_some()))
    }

    fn dead_letter<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
        attempt: Option<Attempt>,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        let done = self.with_owned(key, token, |inner, key| {
            if let Some(mut job) = inner.jobs.remove(key) {
                job.history.extend(attempt);
                let dead = DeadLetter {
                    key: key.clone(),
                    message: job.message,
                    attempts: job.history,
                    reason: reason.to_owned(),
                    dead_at_ms: now_ms(),
                };
                Self::insert_dead(inner, dead);
            }
        });
        ready(Ok(done.is_some()))
    }

    fn release<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
    ) -> BoxFuture<'a, Result<bool>> {
        let done = self.with_owned(key, token, |inner, key| {
            if let Some(job) = inner.jobs.get_mut(key) {
                let now = now_ms();
                job.next_attempt_ms = job.next_attempt_ms.min(now);
                inner.due.insert((job.next_attempt_ms, key.clone()));
            }
        });
        ready(Ok(done.is_some()))
    }

    fn add_dead_letter<'a>(&'a self, dead: &'a DeadLetter) -> BoxFuture<'a, Result<()>> {
        Self::insert_dead(&mut self.lock(), dead.clone());
        ready(Ok(()))
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
            .map(|(_, d)| d)
            .filter(|d| matches(filter, d))
            .take(page.limit)
            .cloned()
            .collect();
        ready(Ok(out))
    }

    fn get_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<Option<DeadLetter>>> {
        let inner = self.lock();
        let out = inner
            .dead_at
            .get(key)
            .and_then(|at| inner.dead.get(&(*at, key.clone())))
            .cloned();
        ready(Ok(out))
    }

    fn replay_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<bool>> {
        let mut inner = self.lock();
        let Some(at) = inner.dead_at.remove(key) else {
            return ready(Ok(false));
        };
        let Some(dead) = inner.dead.remove(&(at, key.clone())) else {
            return ready(Ok(false));
        };
        // Already queued again under the same key: the queued one wins.
        if !inner.jobs.contains_key(key) {
            let now = now_ms();
            inner.due.insert((now, key.clone()));
            inner.jobs.insert(
                key.clone(),
                JobState {
                    message: dead.message,
                    attempts: 0,
                    history: dead.attempts,
                    next_attempt_ms: now,
                    lease: None,
                },
            );
        }
        ready(Ok(true))
    }

    fn purge_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<bool>> {
        let mut inner = self.lock();
        let found = match inner.dead_at.remove(key) {
            Some(at) => inner.dead.remove(&(at, key.clone())).is_some(),
            None => false,
        };
        ready(Ok(found))
    }

    fn stats(&self) -> BoxFuture<'_, Result<QueueStats>> {
        let now = now_ms();
        let inner = self.lock();
        let leased = inner
            .leases
            .iter()
            .filter(|(until, _)| *until > now)
            .count();
        ready(Ok(QueueStats {
            pending: inner.jobs.len() as u64,
            leased: leased as u64,
            dead: inner.dead.len() as u64,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(status: u16) -> Attempt {
        Attempt {
            at_ms: now_ms(),
            url: "http://127.0.0.1:1/".into(),
            status: Some(status),
            latency_ms: 1,
            error: None,
        }
    }

    fn key(ep: &str, id: &str) -> DeliveryKey {
        DeliveryKey {
            endpoint: ep.into(),
            message_id: id.into(),
        }
    }

    #[tokio::test]
    async fn lease_is_exclusive_and_fenced() {
        let q = MemoryQueue::new();
        let m = Message::new("t", "{}").with_id("m1");
        q.enqueue("ep", &m).await.unwrap();
        q.enqueue("ep", &m).await.unwrap(); // no-op
        assert_eq!(q.stats().await.unwrap().pending, 1);
        let l = q.lease(10, Duration::from_secs(30)).await.unwrap();
        assert_eq!(l.len(), 1);
        assert!(q
            .lease(10, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty());
        let wrong = LeaseToken("nope".into());
        assert!(!q.release(&l[0].job.key, &wrong).await.unwrap());
        assert!(q
            .retry_later(&l[0].job.key, &l[0].token, attempt(500), 0)
            .await
            .unwrap());
        // The token is spent.
        assert!(!q.release(&l[0].job.key, &l[0].token).await.unwrap());
        let l2 = q.lease(10, Duration::from_secs(30)).await.unwrap();
        assert_eq!(l2.len(), 1);
        assert_eq!(l2[0].job.attempts, 1);
        assert_ne!(l2[0].token, l[0].token);
        assert!(q
            .dead_letter(
                &l2[0].job.key,
                &l2[0].token,
                Some(attempt(500)),
                "exhausted"
            )
            .await
            .unwrap());
        let dead = q.get_dead(&key("ep", "m1")).await.unwrap().unwrap();
        assert_eq!(dead.attempts.len(), 2);
        assert_eq!(dead.reason, "exhausted");
        assert_eq!(
            q.stats().await.unwrap(),
            QueueStats {
                pending: 0,
                leased: 0,
                dead: 1
            }
        );
    }

    #[tokio::test]
    async fn expired_lease_returns_and_old_token_is_refused() {
        let q = MemoryQueue::new();
        q.enqueue("ep", &Message::new("t", "{}")).await.unwrap();
        let l = q.lease(1, Duration::from_millis(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let l2 = q.lease(1, Duration::from_secs(30)).await.unwrap();
        assert_eq!(l2.len(), 1);
        assert!(!q
            .delivered(&l[0].job.key, &l[0].token, attempt(200))
            .await
            .unwrap());
        assert!(q
            .delivered(&l2[0].job.key, &l2[0].token, attempt(200))
            .await
            .unwrap());
        assert_eq!(q.stats().await.unwrap().pending, 0);
    }

    #[tokio::test]
    async fn scheduled_jobs_wait_until_due() {
        let q = MemoryQueue::new();
        q.enqueue("ep", &Message::new("t", "{}")).await.unwrap();
        let l = q.lease(1, Duration::from_secs(30)).await.unwrap();
        let later = now_ms() + 60_000;
        q.retry_later(&l[0].job.key, &l[0].token, attempt(503), later)
            .await
            .unwrap();
        assert!(q
            .lease(1, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(q.stats().await.unwrap().pending, 1);
    }

    #[tokio::test]
    async fn dlq_paging_filter_replay_purge() {
        let q = MemoryQueue::new();
        for i in 0..25 {
            let ep = if i % 2 == 0 { "a" } else { "b" };
            q.add_dead_letter(&DeadLetter {
                key: key(ep, &format!("m{i:02}")),
                message: Message::new("t", "{}").with_id(format!("m{i:02}")),
                attempts: vec![attempt(500)],
                reason: "exhausted".into(),
                dead_at_ms: 1000 + i,
            })
            .await
            .unwrap();
        }
        let mut seen = Vec::new();
        let mut page = Page {
            after: None,
            limit: 4,
        };
        let filter = DlqFilter {
            endpoint: Some("a".into()),
            ..DlqFilter::default()
        };
        loop {
            let items = q.list_dead(&filter, &page).await.unwrap();
            if items.is_empty() {
                break;
            }
            assert!(items.len() <= 4);
            let last = items.last().unwrap();
            page.after = Some((last.dead_at_ms, last.key.clone()));
            seen.extend(items.into_iter().map(|d| d.key.message_id));
        }
        assert_eq!(seen.len(), 13);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        let time = DlqFilter {
            since_ms: Some(1010),
            until_ms: Some(1012),
            ..DlqFilter::default()
        };
        let page = Page {
            after: None,
            limit: 100,
        };
        assert_eq!(q.list_dead(&time, &page).await.unwrap().len(), 2);

        assert!(q.replay_dead(&key("a", "m00")).await.unwrap());
        assert!(!q.replay_dead(&key("a", "m00")).await.unwrap());
        let l = q.lease(10, Duration::from_secs(30)).await.unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].job.message.id, "m00");
        assert_eq!(l[0].job.attempts, 0);
        assert!(q.purge_dead(&key("b", "m01")).await.unwrap());
        assert!(!q.purge_dead(&key("b", "m01")).await.unwrap());
        assert_eq!(q.stats().await.unwrap().dead, 23);
    }
}
