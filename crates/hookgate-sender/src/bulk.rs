//! Bulk operations on the dead-letter queue that terminate: each acts on the
//! dead letters that existed when it started, once each, even while workers
//! keep dead-lettering (a replayed message that fails again is not replayed
//! a second time).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use hookgate_sender::{bulk, queue::DlqFilter, MemoryQueue};
//! let queue = MemoryQueue::new();
//! let replayed = bulk::replay_all(&queue, &DlqFilter::default(), |_key| {}).await?;
//! assert_eq!(replayed, 0);
//! # Ok::<(), hookgate_sender::queue::QueueError>(())
//! # }).unwrap();
//! ```
//!
//! The snapshot is bounded two ways: by time (`dead_at` before the start,
//! by the caller's clock) and by a keyset cursor over `(dead_at, key)` with
//! a set of the keys already acted on, so a dead letter filed again during
//! the walk — whatever the clocks say — is skipped. Memory grows with the
//! number of dead letters acted on (their keys), never with the DLQ.

use std::collections::HashSet;

use crate::{
    now_ms,
    queue::{DeadLetter, DeliveryKey, DlqFilter, Page, Queue, Result},
};

/// Dead letters fetched per page.
pub const PAGE_SIZE: usize = 100;

/// A walk over the dead letters matching a filter that existed when it was
/// created, each returned once.
pub struct Snapshot<'q, Q: Queue + ?Sized> {
    queue: &'q Q,
    filter: DlqFilter,
    after: Option<(i64, DeliveryKey)>,
    seen: HashSet<DeliveryKey>,
    done: bool,
}

impl<Q: Queue + ?Sized> std::fmt::Debug for Snapshot<'_, Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("filter", &self.filter)
            .field("after", &self.after)
            .field("seen", &self.seen.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<'q, Q: Queue + ?Sized> Snapshot<'q, Q> {
    /// Start a walk over `filter`'s dead letters filed before now.
    pub fn new(queue: &'q Q, filter: &DlqFilter) -> Self {
        let start = now_ms().saturating_add(1);
        let mut filter = filter.clone();
        filter.until_ms = Some(filter.until_ms.map_or(start, |u| u.min(start)));
        Self {
            queue,
            filter,
            after: None,
            seen: HashSet::new(),
            done: false,
        }
    }

    /// The next page of dead letters not returned before; `None` at the end.
    ///
    /// # Errors
    /// The queue failed.
    pub async fn next_page(&mut self) -> Result<Option<Vec<DeadLetter>>> {
        while !self.done {
            let page = Page {
                after: self.after.clone(),
                limit: PAGE_SIZE,
            };
            let items = self.queue.list_dead(&self.filter, &page).await?;
            self.done = items.len() < PAGE_SIZE;
            let Some(last) = items.last() else {
                return Ok(None);
            };
            self.after = Some((last.dead_at_ms, last.key.clone()));
            let fresh: Vec<DeadLetter> = items
                .into_iter()
                .filter(|d| self.seen.insert(d.key.clone()))
                .collect();
            if !fresh.is_empty() {
                return Ok(Some(fresh));
            }
        }
        Ok(None)
    }
}

/// Put every dead letter matching `filter` that existed at the start back
/// into the queue ([`Queue::replay_dead`]), once each; `each` is called for
/// every one replayed. Returns how many.
///
/// # Errors
/// The queue failed (what was replayed before stays replayed).
pub async fn replay_all<Q: Queue + ?Sized>(
    queue: &Q,
    filter: &DlqFilter,
    mut each: impl FnMut(&DeliveryKey),
) -> Result<u64> {
    let mut snapshot = Snapshot::new(queue, filter);
    let mut n = 0;
    while let Some(page) = snapshot.next_page().await? {
        for d in page {
            if queue.replay_dead(&d.key).await? {
                n += 1;
                each(&d.key);
            }
        }
    }
    Ok(n)
}

/// Delete every dead letter matching `filter` that existed at the start,
/// once each; `each` is called for every one purged. Returns how many.
///
/// # Errors
/// The queue failed (what was purged before stays purged).
pub async fn purge_all<Q: Queue + ?Sized>(
    queue: &Q,
    filter: &DlqFilter,
    mut each: impl FnMut(&DeliveryKey),
) -> Result<u64> {
    let mut snapshot = Snapshot::new(queue, filter);
    let mut n = 0;
    while let Some(page) = snapshot.next_page().await? {
        for d in page {
            if queue.purge_dead(&d.key).await? {
                n += 1;
                each(&d.key);
            }
        }
    }
    Ok(n)
}
