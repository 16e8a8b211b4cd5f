//! Past one store: endpoints spread over several queues ("shards") by a
//! stable hash of the endpoint id.
//!
//! One Postgres primary or one Redis server carries a few thousand
//! deliveries a second (BENCHMARKS.md). To go further, run several — one
//! database (or schema, or Redis prefix) per shard — and give every endpoint
//! a home shard: [`shard_of`] maps an endpoint id to a shard with a jump
//! consistent hash (Lamping & Veach, 2014) of a fixed 64-bit FNV-1a hash of
//! the id, so
//!
//! - every process, every version of this crate and every language that
//!   implements the two published functions agrees on an endpoint's home;
//! - an endpoint's deliveries, history, dead letters and resilience state
//!   stay together in one store (per-endpoint guarantees are unchanged);
//! - going from `n` to `n + 1` shards moves only the endpoints that now hash
//!   to the new shard (about `1 / (n + 1)` of them), never between old ones.
//!
//! [`ShardedSender`] stores endpoints and enqueues through the right shard;
//! run [`Worker`](crate::Worker)s on every shard's queue
//! ([`ShardedSender::queues`]), as many per shard as its traffic needs.
//!
//! ```
//! use std::sync::Arc;
//! use hookgate_sender::{shard::ShardedSender, MemoryQueue, Queue};
//!
//! let shards: Vec<Arc<dyn Queue>> = (0..3).map(|_| Arc::new(MemoryQueue::new()) as _).collect();
//! let sender = ShardedSender::new(shards).unwrap();
//! // The same endpoint always lives on the same shard.
//! assert_eq!(sender.shard_for("acme-orders"), sender.shard_for("acme-orders"));
//! assert!(sender.shard_for("acme-orders") < 3);
//! ```
//!
//! # Adding a shard
//! Build the sender with the new list (old shards first, in their order).
//! Endpoints whose home moved must exist on their new shard before messages
//! are enqueued there: [`ShardedSender::add_endpoint`] (or
//! [`ShardedSender::update_endpoint`]) writes to the new home. Deliveries
//! already queued on the old shard stay there and are delivered by its
//! workers, so keep workers on every shard until it is drained. Removing a
//! shard is the same in reverse: stop enqueueing through it, let its workers
//! drain it.

use std::sync::Arc;

use crate::{
    queue::{DeliveryKey, Queue},
    Endpoint, Message, SendError, Sender,
};

/// A stable 64-bit hash of `bytes`: FNV-1a (offset basis
/// `0xcbf29ce484222325`, prime `0x100000001b3`). Fixed forever: endpoint
/// homes depend on it.
#[must_use]
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Jump consistent hash: the bucket in `0..buckets` of `key` (`buckets` of
/// 0 is treated as 1).
#[must_use]
pub fn jump(mut key: u64, buckets: u32) -> u32 {
    let buckets = i64::from(buckets.max(1));
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        // (b + 1) * 2^31 / ((key >> 33) + 1), in floating point as published.
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        {
            j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
        }
    }
    u32::try_from(b).unwrap_or(0)
}

/// The home shard of `endpoint_id` among `shards`: `jump(stable_hash(id), shards)`.
#[must_use]
pub fn shard_of(endpoint_id: &str, shards: u32) -> u32 {
    jump(stable_hash(endpoint_id.as_bytes()), shards)
}

/// [`ShardedSender::new`] was given no queue.
#[derive(Debug, thiserror::Error)]
#[error("a sharded sender needs at least one queue")]
pub struct NoShards;

/// A [`Sender`] over several queues: each endpoint lives on its home shard
/// ([`shard_of`]).
pub struct ShardedSender {
    shards: Vec<(Arc<dyn Queue>, Sender)>,
}

impl std::fmt::Debug for ShardedSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedSender")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl ShardedSender {
    /// A sender over `queues`, shard `i` being `queues[i]`. Keep the order
    /// fixed: it is part of every endpoint's address.
    ///
    /// # Errors
    /// [`NoShards`] for an empty list.
    pub fn new(queues: Vec<Arc<dyn Queue>>) -> Result<Self, NoShards> {
        if queues.is_empty() {
            return Err(NoShards);
        }
        Ok(Self {
            shards: queues
                .into_iter()
                .map(|q| (q.clone(), Sender::new(q)))
                .collect(),
        })
    }

    /// The index of `endpoint_id`'s home shard.
    #[must_use]
    pub fn shard_for(&self, endpoint_id: &str) -> usize {
        let n = u32::try_from(self.shards.len()).unwrap_or(u32::MAX);
        shard_of(endpoint_id, n) as usize
    }

    /// The queue of `endpoint_id`'s home shard.
    #[must_use]
    pub fn queue_for(&self, endpoint_id: &str) -> &Arc<dyn Queue> {
        &self.shards[self.shard_for(endpoint_id)].0
    }

    /// Every shard's queue, in shard order (run workers on each).
    pub fn queues(&self) -> impl Iterator<Item = &Arc<dyn Queue>> {
        self.shards.iter().map(|(q, _)| q)
    }

    fn home(&self, endpoint_id: &str) -> &Sender {
        &self.shards[self.shard_for(endpoint_id)].1
    }

    /// [`Sender::add_endpoint`] on the endpoint's home shard.
    ///
    /// # Errors
    /// As [`Sender::add_endpoint`].
    pub async fn add_endpoint(&self, endpoint: Endpoint) -> Result<(), SendError> {
        self.home(&endpoint.id).add_endpoint(endpoint).await
    }

    /// [`Sender::update_endpoint`] on the endpoint's home shard.
    ///
    /// # Errors
    /// As [`Sender::update_endpoint`].
    pub async fn update_endpoint(&self, endpoint: Endpoint) -> Result<(), SendError> {
        self.home(&endpoint.id).update_endpoint(endpoint).await
    }

    /// [`Sender::enqueue`] on the endpoint's home shard.
    ///
    /// # Errors
    /// As [`Sender::enqueue`].
    pub async fn enqueue(
        &self,
        endpoint_id: &str,
        message: Message,
    ) -> Result<DeliveryKey, SendError> {
        self.home(endpoint_id).enqueue(endpoint_id, message).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a_and_never_changes() {
        // FNV-1a test vectors (Fowler/Noll/Vo).
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(b"foobar"), 0x8594_4171_f739_67e8);
        // Homes pinned: a change here moves endpoints between stores.
        let homes: Vec<u32> = ["acme-orders", "shop", "ep-0", "ep-1", "billing"]
            .iter()
            .map(|id| shard_of(id, 8))
            .collect();
        assert_eq!(homes, PINNED_HOMES);
    }

    /// `shard_of(id, 8)` for the ids above, as an independent Python
    /// implementation of FNV-1a and the paper's jump hash computes them.
    const PINNED_HOMES: [u32; 5] = [3, 7, 2, 3, 2];

    #[test]
    fn jump_stays_in_range() {
        assert_eq!(jump(0, 1), 0);
        assert_eq!(jump(u64::MAX, 1), 0);
        for key in 0..1000u64 {
            assert!(jump(key, 7) < 7);
        }
        assert_eq!(jump(0, 0), 0, "zero buckets is one bucket");
    }

    #[test]
    fn growing_moves_only_to_the_new_shard_and_spreads_evenly() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("endpoint-{i}")).collect();
        for n in 1..8u32 {
            let mut moved = 0usize;
            let mut per = vec![0usize; n as usize + 1];
            for id in &ids {
                let (before, after) = (shard_of(id, n), shard_of(id, n + 1));
                per[after as usize] += 1;
                if before != after {
                    assert_eq!(after, n, "{id} moved between old shards");
                    moved += 1;
                }
            }
            // About 1/(n+1) move; each shard gets about 1/(n+1).
            let expect = ids.len() / (n as usize + 1);
            assert!(moved.abs_diff(expect) < expect / 5, "n={n}: moved {moved}");
            for (shard, count) in per.iter().enumerate() {
                assert!(
                    count.abs_diff(expect) < expect / 5,
                    "n={n}: shard {shard} has {count}"
                );
            }
        }
    }
}
