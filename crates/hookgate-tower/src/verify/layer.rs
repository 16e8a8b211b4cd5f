//! [`VerifyWebhookLayer`]: the configuration and the tower [`Layer`].

use std::{fmt, sync::Arc, time::Duration};

use hookgate_core::Verifier;
use tower_layer::Layer;

use super::{
    policy::{DefaultStatusPolicy, Policy, StatusPolicy},
    VerifyWebhook,
};
use crate::{
    source::{Cidr, SourcePolicy},
    store::{DedupStore, MemoryStore},
};

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "hookgate";
/// Default body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Default claim lease: 30 s.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Default retention of done records: 72 h.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(72 * 3600);
/// `Retry-After` (seconds) sent with a 503 when the store is unreachable.
pub const STORE_RETRY_AFTER_SECS: u64 = 5;

/// A clock returning Unix seconds.
#[derive(Clone)]
pub(crate) struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    pub(crate) fn now(&self) -> i64 {
        (self.0)()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock(..)")
    }
}

/// Everything a [`VerifyWebhook`] service needs, shared between clones.
#[derive(Debug)]
pub(crate) struct Shared<S> {
    pub(crate) verifier: Verifier,
    pub(crate) store: Arc<S>,
    pub(crate) prefix: String,
    pub(crate) body_limit: usize,
    pub(crate) lease: Duration,
    pub(crate) retention: Duration,
    pub(crate) fail_open: bool,
    pub(crate) clock: Clock,
    pub(crate) policy: Policy,
    pub(crate) sources: SourcePolicy,
}

/// Applies [`VerifyWebhook`] to a service: verification, then deduplication
/// through a [`DedupStore`].
///
/// Required values go into [`new`](Self::new) (a [`Verifier`] carries the
/// scheme, the active secrets and the timestamp tolerance); everything else
/// has a default and a `with_*` setter:
///
/// | setting | default |
/// |---|---|
/// | [store](Self::with_store) | [`MemoryStore::default()`] |
/// | [key prefix](Self::with_prefix) | `hookgate` |
/// | [tolerance](Self::with_tolerance) | 300 s (the verifier's) |
/// | [body limit](Self::with_body_limit) | 1 MiB |
/// | [lease](Self::with_lease) | 30 s |
/// | [retention](Self::with_retention) | 72 h |
/// | [fail-open](Self::with_fail_open) | `false` (fail closed: 503) |
/// | [status policy](Self::with_status_policy) | [`DefaultStatusPolicy`] |
/// | [allowed sources](Self::with_allowed_sources) | any address |
/// | [trusted proxies](Self::with_trusted_proxies) | none (`X-Forwarded-For` ignored) |
///
/// ```
/// use hookgate_core::{Scheme, Verifier};
/// use hookgate_tower::{MemoryStore, VerifyWebhookLayer};
/// use std::time::Duration;
///
/// let verifier = Verifier::from_secret_strings(Scheme::Stripe, ["whsec_live"])?;
/// let layer = VerifyWebhookLayer::new(verifier)
///     .with_store(MemoryStore::default())
///     .with_prefix("payments")
///     .with_body_limit(256 * 1024)
///     .with_lease(Duration::from_secs(60));
/// # let _ = layer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct VerifyWebhookLayer<S = MemoryStore> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for VerifyWebhookLayer<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for VerifyWebhookLayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyWebhookLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl VerifyWebhookLayer<MemoryStore> {
    /// A layer verifying with `verifier`, deduplicating in a fresh
    /// [`MemoryStore`] (one process only; use a shared store for replicas).
    #[must_use]
    pub fn new(verifier: Verifier) -> Self {
        Self {
            shared: Arc::new(Shared {
                verifier,
                store: Arc::new(MemoryStore::default()),
                prefix: DEFAULT_PREFIX.to_owned(),
                body_limit: DEFAULT_BODY_LIMIT,
                lease: DEFAULT_LEASE,
                retention: DEFAULT_RETENTION,
                fail_open: false,
                clock: Clock(Arc::new(hookgate_core::unix_now)),
                policy: Policy(Arc::new(DefaultStatusPolicy)),
                sources: SourcePolicy::default(),
            }),
        }
    }
}

impl<S> VerifyWebhookLayer<S> {
    fn into_shared(self) -> Shared<S> {
        match Arc::try_unwrap(self.shared) {
            Ok(shared) => shared,
            Err(arc) => Shared {
                verifier: arc.verifier.clone(),
                store: Arc::clone(&arc.store),
                prefix: arc.prefix.clone(),
                body_limit: arc.body_limit,
                lease: arc.lease,
                retention: arc.retention,
                fail_open: arc.fail_open,
                clock: arc.clock.clone(),
                policy: arc.policy.clone(),
                sources: arc.sources.clone(),
            },
        }
    }

    fn map(self, f: impl FnOnce(&mut Shared<S>)) -> Self {
        let mut shared = self.into_shared();
        f(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Deduplicate in `store` (for several replicas: a Redis or Postgres store
    /// they all share).
    #[must_use]
    pub fn with_store<S2: DedupStore>(self, store: S2) -> VerifyWebhookLayer<S2> {
        self.with_shared_store(Arc::new(store))
    }

    /// Like [`with_store`](Self::with_store), for a store already behind an
    /// `Arc` (shared with other layers or with your own code).
    #[must_use]
    pub fn with_shared_store<S2: DedupStore>(self, store: Arc<S2>) -> VerifyWebhookLayer<S2> {
        let s = self.into_shared();
        VerifyWebhookLayer {
            shared: Arc::new(Shared {
                verifier: s.verifier,
                store,
                prefix: s.prefix,
                body_limit: s.body_limit,
                lease: s.lease,
                retention: s.retention,
                fail_open: s.fail_open,
                clock: s.clock,
                policy: s.policy,
                sources: s.sources,
            }),
        }
    }

    /// Namespace for dedup keys (`prefix:scheme:id`), so several providers,
    /// endpoints or tenants can share one store. Default `hookgate`.
    #[must_use]
    pub fn with_prefix(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.map(|s| s.prefix = prefix)
    }

    /// Accept timestamps at most this far from now, either way (default
    /// 300 s). Sets the verifier's tolerance.
    #[must_use]
    pub fn with_tolerance(self, tolerance: Duration) -> Self {
        self.map(|s| s.verifier = s.verifier.clone().with_tolerance(tolerance))
    }

    /// Largest body accepted, in bytes (default 1 MiB). Larger bodies get
    /// 413; a `Content-Length` above it is rejected before reading, and a
    /// chunked body stops being read at the limit.
    #[must_use]
    pub fn with_body_limit(self, limit: usize) -> Self {
        self.map(|s| s.body_limit = limit)
    }

    /// How long a claim protects an event without a renewal (default 30 s,
    /// at least 1 ms). While the handler runs, the layer renews the claim
    /// every third of the lease, so a slow handler keeps it; if the process
    /// dies (or cannot reach the store) for longer than the lease, a retry
    /// can take the event. Shorter leases let a retry take over sooner after
    /// a crash, at the price of more renewals.
    #[must_use]
    pub fn with_lease(self, lease: Duration) -> Self {
        self.map(|s| s.lease = lease.max(Duration::from_millis(1)))
    }

    /// How long a handled event is remembered (default 72 h). Make it longer
    /// than your senders keep retrying.
    #[must_use]
    pub fn with_retention(self, retention: Duration) -> Self {
        self.map(|s| s.retention = retention.max(Duration::from_millis(1)))
    }

    /// When the store cannot be reached: `false` (default) answers 503 with
    /// `Retry-After` so the sender retries later and nothing is lost; `true`
    /// runs the handler without deduplication (and logs a warning).
    #[must_use]
    pub fn with_fail_open(self, fail_open: bool) -> Self {
        self.map(|s| s.fail_open = fail_open)
    }

    /// Read "now" (Unix seconds) from `clock` instead of the system clock,
    /// for tests. Only the timestamp check uses it; leases are the store's.
    #[must_use]
    pub fn with_clock(self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        let clock = Clock(Arc::new(clock));
        self.map(|s| s.clock = clock)
    }

    /// Decide which handler answers are final (stored and replayed) with
    /// `policy` instead of [`DefaultStatusPolicy`]; any
    /// `Fn(StatusCode) -> bool` works. See [`StatusPolicy`].
    #[must_use]
    pub fn with_status_policy(self, policy: impl StatusPolicy) -> Self {
        let policy = Policy(Arc::new(policy));
        self.map(|s| s.policy = policy)
    }

    /// Accept requests only from client addresses in `ranges`; others get
    /// **403** `source_not_allowed` before their headers or body are read,
    /// and nothing is written to the store. The client address is the
    /// connection's peer (axum's `ConnectInfo<SocketAddr>` or a
    /// [`PeerAddr`](crate::source::PeerAddr) in the request extensions; a
    /// request without either is refused), or, from a
    /// [trusted proxy](Self::with_trusted_proxies), the rightmost untrusted
    /// `X-Forwarded-For` hop. An empty list refuses everyone. Default: no
    /// allow-list. See [`crate::source`] for providers' published ranges.
    #[must_use]
    pub fn with_allowed_sources(self, ranges: impl IntoIterator<Item = Cidr>) -> Self {
        let ranges: Vec<Cidr> = ranges.into_iter().collect();
        self.map(|s| s.sources.allowed = Some(ranges))
    }

    /// Peers whose `X-Forwarded-For` is believed (your load balancers and
    /// reverse proxies). Default: none, so the header is ignored and the
    /// peer address is the client's. Only used with
    /// [`with_allowed_sources`](Self::with_allowed_sources).
    #[must_use]
    pub fn with_trusted_proxies(self, ranges: impl IntoIterator<Item = Cidr>) -> Self {
        let ranges: Vec<Cidr> = ranges.into_iter().collect();
        self.map(|s| s.sources.trusted_proxies = ranges)
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<S> {
        &self.shared.store
    }
}

impl<Svc, S> Layer<Svc> for VerifyWebhookLayer<S> {
    type Service = VerifyWebhook<Svc, S>;

    fn layer(&self, inner: Svc) -> Self::Service {
        VerifyWebhook::from_shared(inner, Arc::clone(&self.shared))
    }
}
