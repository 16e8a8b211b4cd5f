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
//! let record = DoneRecord { status: 200, digest };
//! assert!(store.complete("p:standard:msg_1", &token, record, Duration::from_secs(3600)).await?);
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
//! # Footprint
//! About 200 bytes per key with 40-byte keys; see the "Dedup stores" section
//! of BENCHMARKS.md for the measured resident size at 100,000 keys.

use super::{BoxFuture, Claim, ClaimToken, DedupStore, Digest, DoneRecord, Result};
use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// How many expired entries a claim removes on its way, at most (beyond what
/// eviction needs).
const PURGE_PER_CLAIM: usize = 4;

/// A bounded, expiring in-memory store for one process and for tests.
///
/// Claims are atomic under one [`std::sync::Mutex`], which is never held
/// across an `.await` (the methods do all their work before returning a ready
/// future). Clones are not provided; share it with [`Arc`] (the layer takes
/// any `DedupStore`, and `Arc<T>` is one).
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// Origin of the store's millisecond clock.
    epoch: Instant,
}

/// Per-key state. Kept small: 64 bytes (the key lives in the map, shared with
/// the expiry index through one `Arc<str>`).
#[derive(Clone, Copy)]
struct Entry {
    digest: Digest,
    /// Claim token (random), meaningful while `status == 0`.
    token: [u64; 2],
    /// Milliseconds since `epoch` at which the lease or retention ends.
    expires_ms: u64,
    /// 0 while claimed, else the handler's stored status.
    status: u16,
}

impl Entry {
    fn is_claim(&self) -> bool {
        self.status == 0
    }
}

type Key = Arc<str>;

struct Inner {
    capacity: usize,
    map: HashMap<Key, Entry>,
    /// Live claims ordered by lease end.
    claims: BTreeSet<(u64, Key)>,
    /// Done records ordered by retention end.
    done: BTreeSet<(u64, Key)>,
}

impl Inner {
    fn index_mut(&mut self, entry: &Entry) -> &mut BTreeSet<(u64, Key)> {
        if entry.is_claim() {
            &mut self.claims
        } else {
            &mut self.done
        }
    }

    /// Remove `key` (whose current entry is `entry`) from map and index.
    fn remove(&mut self, key: &Key, entry: &Entry) {
        self.index_mut(entry)
            .remove(&(entry.expires_ms, key.clone()));
        self.map.remove(key);
    }

    /// Pop the first element of `claims` or `done` if it has expired.
    fn pop_expired(&mut self, now: u64) -> bool {
        for claims in [true, false] {
            let index = if claims {
                &mut self.claims
            } else {
                &mut self.done
            };
            if index.first().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, key)) = index.pop_first() {
                    self.map.remove(&key);
                }
                return true;
            }
        }
        false
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
        let victim = self.done.pop_first().or_else(|| self.claims.pop_first());
        if let Some((_, key)) = victim {
            tracing::debug!(key = %key, "memory dedup store full: evicting the oldest entry");
            self.map.remove(&key);
        }
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

    /// A store holding at most `capacity` keys (at least 1).
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                capacity: capacity.max(1),
                map: HashMap::new(),
                claims: BTreeSet::new(),
                done: BTreeSet::new(),
            }),
            epoch: Instant::now(),
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
        self.lock().map.len()
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
        // A panic while holding the lock cannot leave `Inner` half-updated in
        // a way that breaks safety; keep serving rather than poisoning every
        // later request.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn claim_sync(&self, key: &str, digest: &Digest, lease: Duration) -> Claim {
        let now = self.now_ms();
        let mut inner = self.lock();
        for _ in 0..PURGE_PER_CLAIM {
            if !inner.pop_expired(now) {
                break;
            }
        }
        let key: Key = match inner.map.get_key_value(key) {
            Some((_, entry)) if entry.expires_ms > now => {
                return if entry.is_claim() {
                    Claim::InFlight {
                        remaining: Duration::from_millis(entry.expires_ms - now),
                        digest: entry.digest,
                    }
                } else {
                    Claim::Done(DoneRecord {
                        status: entry.status,
                        digest: entry.digest,
                    })
                };
            }
            Some((k, entry)) => {
                // Expired claim or done record: the key is free again.
                let (k, entry) = (k.clone(), *entry);
                inner.remove(&k, &entry);
                k
            }
            None => {
                if inner.map.len() >= inner.capacity {
                    inner.evict_one(now);
                }
                Arc::from(key)
            }
        };
        let raw: u128 = rand::random();
        let entry = Entry {
            digest: *digest,
            token: split(raw),
            expires_ms: add_ms(now, lease),
            status: 0,
        };
        inner.claims.insert((entry.expires_ms, key.clone()));
        inner.map.insert(key, entry);
        Claim::Acquired(ClaimToken::from_string(format!("{raw:032x}")))
    }

    /// Find the live claim on `key` owned by `token`.
    fn owned(inner: &Inner, key: &str, token: &ClaimToken, now: u64) -> Option<(Key, Entry)> {
        let token = parse_token(token)?;
        let (k, entry) = inner.map.get_key_value(key)?;
        (entry.is_claim() && entry.token == token && entry.expires_ms > now)
            .then(|| (k.clone(), *entry))
    }

    fn complete_sync(
        &self,
        key: &str,
        token: &ClaimToken,
        record: DoneRecord,
        retention: Duration,
    ) -> bool {
        let now = self.now_ms();
        let mut inner = self.lock();
        let Some((key, mut entry)) = Self::owned(&inner, key, token, now) else {
            return false;
        };
        inner.claims.remove(&(entry.expires_ms, key.clone()));
        // Status 0 marks a claim; a done record's status is never 0 in HTTP,
        // but keep the invariant even for odd callers.
        entry.status = record.status.max(1);
        entry.digest = record.digest;
        entry.token = [0; 2];
        entry.expires_ms = add_ms(now, retention);
        inner.done.insert((entry.expires_ms, key.clone()));
        inner.map.insert(key, entry);
        true
    }

    fn release_sync(&self, key: &str, token: &ClaimToken) -> bool {
        let now = self.now_ms();
        let mut inner = self.lock();
        let Some((key, entry)) = Self::owned(&inner, key, token, now) else {
            return false;
        };
        inner.remove(&key, &entry);
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
            .field("len", &inner.map.len())
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
        DoneRecord {
            status,
            digest: [1; 32],
        }
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
        assert!(inner.map.is_empty() && inner.claims.is_empty() && inner.done.is_empty());
    }
}
