//! In-process store: a bounded, expiring map behind one mutex.
//!
//! ```
//! use hookgate_tower::store::{Claim, DedupStore, DoneRecord, MemoryStore};
//! use std::time::Duration;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), hookgate_tower::store::StoreError> {
//! let store = MemoryStore::with_capacity(10_000);
//! let digest = [0u8; 32];
//! let Claim::Acquired(token) = store.claim("p:standard:msg_1", &digest, Duration::from_secs(30)).await? else {
//!     unreachable!("a fresh key is free");
//! };
//! let record = DoneRecord::new(200, digest);
//! assert!(store.complete("p:standard:msg_1", &token, record.clone(), Duration::from_secs(3600)).await?);
//! assert_eq!(
//!     store.claim("p:standard:msg_1", &digest, Duration::from_secs(30)).await?,
//!     Claim::Done(record)
//! );
//! # Ok(())
//! # }
//! ```
//!
//! # Bounds and eviction
//! The store holds at most `capacity` keys (default
//! [`MemoryStore::DEFAULT_CAPACITY`], 100,000). When a new key arrives and the
//! store is full, it frees one slot, in this order:
//!
//! 1. every entry whose lease or retention has passed (all of them, not one);
//! 2. otherwise the **done** record that expires first — with one retention
//!    period for all events, that is the oldest completed event;
//! 3. only when every entry is a live in-flight claim, the claim whose lease
//!    ends first (the oldest claim).
//!
//! Evicting a done record means a replay of that (old) event would run the
//! handler again; evicting a live claim means a concurrent duplicate could run
//! alongside it. Done records go first because claims are bounded by the
//! number of handlers running at once, so step 3 only happens when more than
//! `capacity` handlers are in flight. Size the capacity above the number of
//! events you receive per retention period if replays must always be caught,
//! or use Redis/Postgres.
//!
//! Expired entries are also removed a few at a time on every claim, so memory
//! is given back without a background task.
//!
//! # Limits
//! The store protects **one process**, and forgets everything when it
//! restarts: a retry arriving after a restart (or at another replica) runs
//! the handler again. Use Redis or Postgres for replicas or restarts.
//!
//! # Footprint
//! The store does not keep the keys themselves but a 128-bit keyed hash of
//! each (two SipHash-1-3 with random per-store keys), so an entry costs the
//! same whatever the key's length: about 80 bytes in a slot array sized to
//! the capacity, plus the hash index and the expiry index, under 200 bytes
//! per key in all. A done record whose handler answered a body or a content
//! type also keeps those (at most [`DoneRecord::MAX_BODY`] bytes of body) in
//! a side map: about 100 bytes plus the body and the content type per such
//! record. Handlers answering short bodies (`ok`, `{}`) add little; at the
//! default capacity, 100,000 records with 4 KiB bodies would hold about
//! 420 MB, so size the capacity (or the bodies) accordingly. Two different keys would have to collide on 128 keyed
//! bits to be confused (about 10^-29 at capacity); an attacker cannot aim for
//! it without the per-store keys. See the "Dedup stores" section of
//! BENCHMARKS.md for the measured resident size at 100,000 keys.

use super::{BoxFuture, Claim, ClaimToken, DedupStore, Digest, DoneRecord, Result};
use bytes::Bytes;
use std::{
    collections::{hash_map::RandomState, BTreeSet, HashMap},
    fmt,
    hash::BuildHasher,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// How many expired entries a claim removes on its way, at most (beyond what
/// eviction needs).
const PURGE_PER_CLAIM: usize = 4;

/// A bounded, expiring in-memory store for one process and for tests.
///
/// Claims are atomic under one [`std::sync::Mutex`], which is never held
/// across an `.await` (the methods do all their work before returning a ready
/// future). Share it with [`Arc`](std::sync::Arc) (the layer takes any
/// `DedupStore`, and `Arc<T>` is one).
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// Origin of the store's millisecond clock.
    epoch: Instant,
    /// The two halves of the keyed key hash.
    hash: [RandomState; 2],
}

/// 128-bit keyed hash of a key.
type KeyHash = [u64; 2];

/// Index into [`Inner::slots`].
type SlotId = u32;

/// One key's state: 80 bytes.
#[derive(Clone, Copy)]
struct Slot {
    key: KeyHash,
    digest: Digest,
    /// Claim token (random), meaningful while `status == 0`.
    token: [u64; 2],
    /// Milliseconds since `epoch` at which the lease or retention ends.
    expires_ms: u64,
    /// 0 while claimed, else the handler's stored status.
    status: u16,
}

impl Slot {
    fn is_claim(&self) -> bool {
        self.status == 0
    }
}

struct Inner {
    capacity: usize,
    /// Key hash -> slot.
    index: HashMap<KeyHash, SlotId>,
    /// Entries; grows up to `capacity` and is then reused through `free`.
    slots: Vec<Slot>,
    /// Slots not in use.
    free: Vec<SlotId>,
    /// Live claims ordered by lease end.
    claims: BTreeSet<(u64, SlotId)>,
    /// Done records ordered by retention end.
    done: BTreeSet<(u64, SlotId)>,
    /// Response content type and body of done records that have either.
    replays: HashMap<SlotId, Box<(Option<String>, Bytes)>>,
}

impl Inner {
    fn slot(&self, id: SlotId) -> &Slot {
        &self.slots[id as usize]
    }

    /// The expiry index that holds `slot`.
    fn order_of(&mut self, slot: &Slot) -> &mut BTreeSet<(u64, SlotId)> {
        if slot.is_claim() {
            &mut self.claims
        } else {
            &mut self.done
        }
    }

    /// Forget slot `id` entirely: index, expiry order, and hand it to `free`.
    fn free_slot(&mut self, id: SlotId) {
        let slot = *self.slot(id);
        self.order_of(&slot).remove(&(slot.expires_ms, id));
        self.index.remove(&slot.key);
        self.replays.remove(&id);
        self.free.push(id);
    }

    /// Free the entry that expires first among claims and done records, if
    /// it has expired.
    fn pop_expired(&mut self, now: u64) -> bool {
        let expired =
            |order: &BTreeSet<(u64, SlotId)>| order.first().copied().filter(|(at, _)| *at <= now);
        match expired(&self.claims).or_else(|| expired(&self.done)) {
            Some((_, id)) => {
                self.free_slot(id);
                true
            }
            None => false,
        }
    }

    /// Make room for one new key.
    fn evict_one(&mut self, now: u64) {
        let mut freed = false;
        while self.pop_expired(now) {
            freed = true;
        }
        if freed {
            return;
        }
        let victim = self.done.first().or_else(|| self.claims.first()).copied();
        if let Some((_, id)) = victim {
            tracing::debug!(
                in_flight = self.slot(id).is_claim(),
                "memory dedup store full: evicting the oldest entry"
            );
            self.free_slot(id);
        }
    }

    /// A slot for a new key (the caller made room).
    fn take_slot(&mut self, fill: Slot) -> SlotId {
        if let Some(id) = self.free.pop() {
            self.slots[id as usize] = fill;
            return id;
        }
        if self.slots.len() == self.slots.capacity() {
            // Grow by doubling, but never past the store's capacity.
            let more = self
                .slots
                .len()
                .max(16)
                .min(self.capacity - self.slots.len());
            self.slots.reserve_exact(more.max(1));
        }
        // `capacity` is at most u32::MAX, so every index fits.
        let id = SlotId::try_from(self.slots.len()).unwrap_or(SlotId::MAX);
        self.slots.push(fill);
        id
    }
}

impl MemoryStore {
    /// Keys held at most by [`MemoryStore::new`] / [`Default`].
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// A store holding at most [`Self::DEFAULT_CAPACITY`] keys.
    #[must_use]
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// A store holding at most `capacity` keys (at least 1, at most
    /// `u32::MAX`). Memory grows with use, up to the capacity.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                capacity: capacity.clamp(1, SlotId::MAX as usize),
                index: HashMap::new(),
                slots: Vec::new(),
                free: Vec::new(),
                claims: BTreeSet::new(),
                done: BTreeSet::new(),
                replays: HashMap::new(),
            }),
            epoch: Instant::now(),
            hash: [RandomState::new(), RandomState::new()],
        }
    }

    /// The most keys this store holds.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }

    /// Keys held right now, including expired ones not yet removed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().index.len()
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remove every expired entry now; returns how many were removed.
    /// Optional: expired entries are also removed as claims arrive.
    pub fn purge_expired(&self) -> usize {
        let now = self.now_ms();
        let mut inner = self.lock();
        let mut n = 0;
        while inner.pop_expired(now) {
            n += 1;
        }
        n
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update completes before the lock is released and none can
        // panic half-way in a way that breaks the indexes' consistency, so
        // keep serving rather than poisoning every later request.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn key_hash(&self, key: &str) -> KeyHash {
        [self.hash[0].hash_one(key), self.hash[1].hash_one(key)]
    }

    fn claim_sync(&self, key: &str, digest: &Digest, lease: Duration) -> Claim {
        let key = self.key_hash(key);
        let now = self.now_ms();
        let raw: u128 = rand::random();
        let fill = Slot {
            key,
            digest: *digest,
            token: split(raw),
            expires_ms: add_ms(now, lease),
            status: 0,
        };
        let mut inner = self.lock();
        for _ in 0..PURGE_PER_CLAIM {
            if !inner.pop_expired(now) {
                break;
            }
        }
        let id = match inner.index.get(&key).copied() {
            Some(id) => {
                let slot = *inner.slot(id);
                if slot.expires_ms > now {
                    return if slot.is_claim() {
                        Claim::InFlight {
                            remaining: Duration::from_millis(slot.expires_ms - now),
                            digest: slot.digest,
                        }
                    } else {
                        let mut record = DoneRecord::new(slot.status, slot.digest);
                        if let Some(replay) = inner.replays.get(&id) {
                            record.content_type.clone_from(&replay.0);
                            record.body = replay.1.clone();
                        }
                        Claim::Done(record)
                    };
                }
                // Expired claim or done record: the key is free again; take
                // over its slot.
                inner.order_of(&slot).remove(&(slot.expires_ms, id));
                inner.replays.remove(&id);
                inner.slots[id as usize] = fill;
                id
            }
            None => {
                if inner.index.len() >= inner.capacity {
                    inner.evict_one(now);
                }
                let id = inner.take_slot(fill);
                inner.index.insert(key, id);
                id
            }
        };
        inner.claims.insert((fill.expires_ms, id));
        Claim::Acquired(ClaimToken::from_string(format!("{raw:032x}")))
    }

    /// The slot of the claim on `key` owned by `token`, expired or not.
    fn owned(&self, inner: &Inner, key: &str, token: &ClaimToken) -> Option<SlotId> {
        let token = parse_token(token)?;
        let id = *inner.index.get(&self.key_hash(key))?;
        let slot = inner.slot(id);
        (slot.is_claim() && slot.token == token).then_some(id)
    }

    fn complete_sync(
        &self,
        key: &str,
        token: &ClaimToken,
        record: DoneRecord,
        retention: Duration,
    ) -> bool {
        if parse_token(token).is_none() {
            return false;
        }
        let now = self.now_ms();
        let mut inner = self.lock();
        let hash = self.key_hash(key);
        let id = match self.owned(&inner, key, token) {
            Some(id) => id,
            None => match inner.index.get(&hash).copied() {
                // A live claim of another token, or a live done record.
                Some(id) if inner.slot(id).expires_ms > now => return false,
                // Free: an expired entry, taken over like a claim would.
                Some(id) => id,
                None => {
                    if inner.index.len() >= inner.capacity {
                        inner.evict_one(now);
                    }
                    let placeholder = Slot {
                        key: hash,
                        digest: record.digest,
                        token: [0; 2],
                        expires_ms: now,
                        status: 0,
                    };
                    let id = inner.take_slot(placeholder);
                    inner.index.insert(hash, id);
                    inner.claims.insert((now, id));
                    id
                }
            },
        };
        let mut slot = *inner.slot(id);
        inner.order_of(&slot).remove(&(slot.expires_ms, id));
        // Status 0 marks a claim; HTTP has no status 0, but keep the
        // invariant even for odd callers.
        slot.status = record.status.max(1);
        slot.digest = record.digest;
        slot.token = [0; 2];
        slot.expires_ms = add_ms(now, retention);
        inner.done.insert((slot.expires_ms, id));
        inner.slots[id as usize] = slot;
        if record.content_type.is_some() || !record.body.is_empty() {
            inner
                .replays
                .insert(id, Box::new((record.content_type, record.body)));
        } else {
            inner.replays.remove(&id);
        }
        true
    }

    fn release_sync(&self, key: &str, token: &ClaimToken) -> bool {
        let mut inner = self.lock();
        let Some(id) = self.owned(&inner, key, token) else {
            return false;
        };
        inner.free_slot(id);
        true
    }

    fn renew_sync(&self, key: &str, token: &ClaimToken, lease: Duration) -> bool {
        let now = self.now_ms();
        let mut inner = self.lock();
        let Some(id) = self.owned(&inner, key, token) else {
            return false;
        };
        let mut slot = *inner.slot(id);
        inner.claims.remove(&(slot.expires_ms, id));
        slot.expires_ms = add_ms(now, lease);
        inner.claims.insert((slot.expires_ms, id));
        inner.slots[id as usize] = slot;
        true
    }
}

fn split(raw: u128) -> [u64; 2] {
    // Truncation is the point: the two halves of the token.
    #[allow(clippy::cast_possible_truncation)]
    [(raw >> 64) as u64, raw as u64]
}

/// Tokens this store issues are exactly 32 lowercase hex digits.
fn parse_token(token: &ClaimToken) -> Option<[u64; 2]> {
    let s = token.as_str();
    if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u128::from_str_radix(s, 16).ok().map(split)
}

fn add_ms(now: u64, d: Duration) -> u64 {
    now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemoryStore")
            .field("capacity", &inner.capacity)
            .field("len", &inner.index.len())
            .field("claims", &inner.claims.len())
            .field("done", &inner.done.len())
            .finish_non_exhaustive()
    }
}

impl DedupStore for MemoryStore {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        digest: &'a Digest,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim>> {
        let claim = self.claim_sync(key, digest, lease);
        Box::pin(std::future::ready(Ok(claim)))
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        record: DoneRecord,
        retention: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        let done = self.complete_sync(key, token, record, retention);
        Box::pin(std::future::ready(Ok(done)))
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a ClaimToken) -> BoxFuture<'a, Result<bool>> {
        let released = self.release_sync(key, token);
        Box::pin(std::future::ready(Ok(released)))
    }

    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        let renewed = self.renew_sync(key, token, lease);
        Box::pin(std::future::ready(Ok(renewed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(30);
    const KEEP: Duration = Duration::from_secs(3600);

    fn acquire(store: &MemoryStore, key: &str) -> ClaimToken {
        match store.claim_sync(key, &[1; 32], LEASE) {
            Claim::Acquired(t) => t,
            other => panic!("expected Acquired for {key}, got {other:?}"),
        }
    }

    fn done(status: u16) -> DoneRecord {
        DoneRecord::new(status, [1; 32])
    }

    #[test]
    fn bounded_and_evicts_oldest_done_first() {
        let store = MemoryStore::with_capacity(3);
        for k in ["a", "b"] {
            let t = acquire(&store, k);
            assert!(store.complete_sync(k, &t, done(200), KEEP));
        }
        let _c = acquire(&store, "c"); // live claim
        assert_eq!(store.len(), 3);
        let _d = acquire(&store, "d"); // evicts "a", the oldest done record
        assert_eq!(store.len(), 3);
        assert!(matches!(
            store.claim_sync("a", &[1; 32], LEASE),
            Claim::Acquired(_)
        ));
        // "a" re-entered and evicted "b"; "c" (a live claim) survived both.
        assert!(matches!(
            store.claim_sync("c", &[1; 32], LEASE),
            Claim::InFlight { .. }
        ));
        assert!(matches!(
            store.claim_sync("b", &[1; 32], LEASE),
            Claim::Acquired(_)
        ));
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn expired_entries_go_before_live_ones() {
        let store = MemoryStore::with_capacity(2);
        let t = acquire(&store, "old");
        assert!(store.complete_sync("old", &t, done(200), KEEP));
        assert!(matches!(
            store.claim_sync("short", &[1; 32], Duration::ZERO),
            Claim::Acquired(_)
        ));
        // "short" expired at once: it is evicted, not the live done record.
        let _n = acquire(&store, "new");
        assert_eq!(
            store.claim_sync("old", &[1; 32], LEASE),
            Claim::Done(done(200))
        );
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn full_of_live_claims_evicts_oldest_claim() {
        let store = MemoryStore::with_capacity(2);
        let _a = acquire(&store, "a");
        let _b = acquire(&store, "b");
        let _c = acquire(&store, "c");
        assert_eq!(store.len(), 2);
        assert!(matches!(
            store.claim_sync("b", &[1; 32], LEASE),
            Claim::InFlight { .. }
        ));
    }

    #[test]
    fn foreign_token_shapes_are_rejected() {
        let store = MemoryStore::new();
        let t = acquire(&store, "k");
        let upper = ClaimToken::from_string(t.as_str().to_uppercase());
        let short = ClaimToken::from_string(t.as_str()[..31].to_owned());
        let empty = ClaimToken::from_string(String::new());
        for bad in [&upper, &short, &empty] {
            assert!(!store.complete_sync("k", bad, done(200), KEEP));
            assert!(!store.release_sync("k", bad));
        }
        assert!(store.release_sync("k", &t));
        assert!(store.is_empty());
    }

    /// Index, slots, free list and expiry orders agree.
    fn check_invariants(store: &MemoryStore) {
        let inner = store.lock();
        assert!(inner.index.len() <= inner.capacity);
        assert!(inner.slots.len() <= inner.capacity);
        assert_eq!(inner.index.len() + inner.free.len(), inner.slots.len());
        assert_eq!(inner.claims.len() + inner.done.len(), inner.index.len());
        for (key, &id) in &inner.index {
            let slot = inner.slot(id);
            assert_eq!(&slot.key, key);
            let order = if slot.is_claim() {
                &inner.claims
            } else {
                &inner.done
            };
            assert!(order.contains(&(slot.expires_ms, id)));
        }
        for id in inner.replays.keys() {
            let slot = inner.slot(*id);
            assert!(!slot.is_claim(), "only done records keep a replay body");
            assert_eq!(inner.index.get(&slot.key), Some(id));
        }
    }

    #[test]
    fn churn_keeps_the_bound_and_the_indexes_consistent() {
        let store = MemoryStore::with_capacity(8);
        let mut live = Vec::new();
        for i in 0..2_000u32 {
            let k = format!("k{}", i % 37);
            let lease = if i % 5 == 0 { Duration::ZERO } else { LEASE };
            if let Claim::Acquired(t) = store.claim_sync(&k, &[1; 32], lease) {
                match i % 3 {
                    0 => {
                        let record = done(200).with_body(None, Bytes::from_static(b"ok"));
                        store.complete_sync(&k, &t, record, KEEP);
                    }
                    1 => {
                        store.release_sync(&k, &t);
                    }
                    _ => live.push((k, t)),
                }
            }
            if i % 11 == 0 {
                // Completing a free (or foreign) key, and renewing live claims.
                let k = format!("f{}", i % 13);
                store.complete_sync(&k, &ClaimToken::generate(), done(201), KEEP);
                if let Some((k, t)) = live.last() {
                    store.renew_sync(k, t, LEASE);
                }
            }
            if i % 97 == 0 {
                store.purge_expired();
            }
            check_invariants(&store);
        }
        for (k, t) in live {
            store.release_sync(&k, &t);
            check_invariants(&store);
        }
    }

    #[test]
    fn expired_claims_stay_owned_until_taken() {
        let store = MemoryStore::new();
        let t = match store.claim_sync("k", &[1; 32], Duration::ZERO) {
            Claim::Acquired(t) => t,
            other => panic!("{other:?}"),
        };
        // Expired but not purged or re-claimed: the token still owns it.
        assert!(store.renew_sync("k", &t, LEASE));
        assert!(matches!(
            store.claim_sync("k", &[1; 32], LEASE),
            Claim::InFlight { .. }
        ));
        assert!(store.complete_sync("k", &t, done(200), KEEP));
        assert!(!store.renew_sync("k", &t, LEASE));
        check_invariants(&store);
    }

    #[test]
    fn purge_expired_empties_the_indexes() {
        let store = MemoryStore::new();
        for k in ["a", "b", "c"] {
            assert!(matches!(
                store.claim_sync(k, &[1; 32], Duration::ZERO),
                Claim::Acquired(_)
            ));
        }
        // Each claim already removed the earlier expired ones on its way.
        assert_eq!(store.len(), 1);
        assert_eq!(store.purge_expired(), 1);
        let inner = store.lock();
        assert!(inner.index.is_empty() && inner.claims.is_empty() && inner.done.is_empty());
        assert_eq!(
            inner.free.len(),
            inner.slots.len(),
            "every slot is free again"
        );
    }
}
