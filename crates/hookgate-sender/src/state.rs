//! An endpoint's shared resilience state as one value: a breaker per URL,
//! the rate limiter and the failure streak, read from and written to the
//! store ([`Queue::endpoint_state`], [`Queue::swap_endpoint_state`]).
//!
//! This is what `hookgate endpoint show` prints and what the worker's
//! pure planning ([`decide::plan`](crate::decide::plan)) reads.
//!
//! # Clocks
//! The store only compare-and-sets these values; the times inside them
//! (breaker cool-downs, the limiter's refill, the failure streak) are the
//! worker's clock ([`WorkerBuilder::with_clock`](crate::worker::WorkerBuilder::with_clock)).
//! This departs from "time is the store's", which still holds for when
//! deliveries are due: workers whose clocks disagree shift cool-downs and
//! refills by their skew (keep them NTP-synchronised).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use hookgate_core::Scheme;
//! use hookgate_sender::{breaker::Phase, state::EndpointHealth, Endpoint, MemoryQueue};
//!
//! let queue = MemoryQueue::new();
//! let ep = Endpoint::new("orders", "https://a.example/", Scheme::GitHub, "s")?
//!     .with_url("https://b.example/")?;
//! let health = EndpointHealth::load(&queue, &ep).await?;
//! assert_eq!(health.breakers.len(), 2);
//! assert!(health.breakers.iter().all(|b| b.state.phase == Phase::Closed));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use crate::{
    breaker::BreakerState,
    lifecycle::FailureStreak,
    limiter::LimiterState,
    queue::{Queue, QueueError, StateRecord},
    Endpoint,
};

/// The record name of URL `index`'s breaker.
#[must_use]
pub fn breaker_name(index: usize) -> String {
    format!("breaker:{index}")
}

/// The record name of the rate limiter.
pub const LIMITER: &str = "limiter";
/// The record name of the failure streak.
pub const STREAK: &str = "streak";

/// One URL's breaker, with the version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UrlBreaker {
    /// The URL, masked ([`redact::url`](crate::redact::url)).
    pub url: String,
    /// Its breaker.
    pub state: BreakerState,
    /// The stored version (0: never written).
    pub version: u64,
}

/// An endpoint's shared state, as read at one moment.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EndpointHealth {
    /// One breaker per URL, in failover order.
    pub breakers: Vec<UrlBreaker>,
    /// The rate limiter, with its version, when the endpoint has a rate limit.
    pub limiter: Option<(LimiterState, u64)>,
    /// The failure streak, with its version.
    pub streak: (FailureStreak, u64),
}

impl EndpointHealth {
    /// Read `endpoint`'s state from `queue`. A queue that keeps no shared
    /// state (`Config` error) reads as all closed.
    ///
    /// # Errors
    /// The queue failed.
    pub async fn load<Q: Queue + ?Sized>(
        queue: &Q,
        endpoint: &Endpoint,
    ) -> Result<Self, QueueError> {
        let records = match queue.endpoint_state(&endpoint.id).await {
            Ok(r) => r,
            Err(e) if e.kind() == crate::queue::QueueErrorKind::Config => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Self::from_records(endpoint, &records, crate::now_ms()))
    }

    /// The state in `records` (as [`Queue::endpoint_state`] returns them).
    #[must_use]
    pub fn from_records(endpoint: &Endpoint, records: &[StateRecord], now_ms: i64) -> Self {
        let find = |name: &str| records.iter().find(|r| r.name == name);
        let breakers = endpoint
            .urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let rec = find(&breaker_name(i));
                UrlBreaker {
                    url: crate::redact::url(url),
                    state: rec
                        .map(|r| BreakerState::decode(&r.value))
                        .unwrap_or_default(),
                    version: rec.map_or(0, |r| r.version),
                }
            })
            .collect();
        let limiter = endpoint.rate_limit.map(|limit| {
            let rec = find(LIMITER);
            (
                LimiterState::decode(rec.map(|r| r.value.as_str()), &limit, now_ms),
                rec.map_or(0, |r| r.version),
            )
        });
        let rec = find(STREAK);
        let streak = (
            FailureStreak::decode(rec.map(|r| r.value.as_str())),
            rec.map_or(0, |r| r.version),
        );
        Self {
            breakers,
            limiter,
            streak,
        }
    }
}
