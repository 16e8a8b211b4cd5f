//! The adaptive rate limit of an endpoint: pure token bucket with AIMD.
//!
//! Every worker on the store shares one [`LimiterState`] per endpoint
//! (compare-and-set through [`Queue::swap_endpoint_state`](crate::queue::Queue::swap_endpoint_state)):
//! a delivery takes a token before its attempt, or is deferred without
//! spending an attempt until one is due ([`LimiterState::take`]).
//!
//! - The allowed rate starts at the configured maximum.
//! - On `429` or `503` it drops to three quarters ([`DECREASE_FACTOR`];
//!   at most once per second, so a burst of
//!   throttled answers to requests already in flight counts once), down to
//!   a floor, and a `Retry-After` pauses the whole endpoint, not only that
//!   message ([`LimiterState::throttled`]).
//! - On success it climbs back additively, by a twentieth of the maximum
//!   (at least one message per second) each second, up to the maximum
//!   ([`LimiterState::succeeded`]).
//!
//! The bucket holds at most a tenth of a second's worth of tokens (at
//! least one), so the rate holds over short windows too.
//!
//! ```
//! use std::time::Duration;
//! use hookgate_sender::limiter::{LimiterState, RateLimit};
//!
//! let limit = RateLimit::per_second(10.0).unwrap();
//! let mut s = LimiterState::new(&limit, 0);
//! assert!(s.take(&limit, 0).is_ok());
//! assert_eq!(s.take(&limit, 0), Err(Duration::from_millis(100))); // next token in 100 ms
//! assert!(s.take(&limit, 100).is_ok());
//! s.throttled(&limit, 100, Some(Duration::from_secs(2)));
//! assert_eq!(s.rate, 7.5);
//! assert_eq!(s.take(&limit, 200), Err(Duration::from_millis(1_900))); // paused
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest pause a `Retry-After` imposes on an endpoint.
pub const MAX_PAUSE: Duration = Duration::from_secs(300);
/// The rate never drops below this fraction of the maximum.
const FLOOR_FRACTION: f64 = 0.02;
/// Shortest time between two decreases, ms.
const DECREASE_GAP_MS: i64 = 1_000;
/// What a decrease multiplies the rate by. Gentler than halving, so the
/// sawtooth between "throttled" and "backed off" stays near the receiver's
/// real limit (a receiver throttling above 15/s gets about 13/s).
pub const DECREASE_FACTOR: f64 = 0.75;

/// An endpoint's configured maximum rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Most messages per second.
    pub max_per_sec: f64,
}

impl RateLimit {
    /// At most `rate` messages per second; `None` unless `rate` is finite and positive.
    #[must_use]
    pub fn per_second(rate: f64) -> Option<Self> {
        (rate.is_finite() && rate > 0.0).then_some(Self { max_per_sec: rate })
    }

    /// Parse `50/s`, `600/m`, `3600/h` or a bare number (per second).
    ///
    /// ```
    /// use hookgate_sender::limiter::RateLimit;
    /// assert_eq!(RateLimit::parse("50/s").unwrap().max_per_sec, 50.0);
    /// assert_eq!(RateLimit::parse("120/m").unwrap().max_per_sec, 2.0);
    /// assert!(RateLimit::parse("0/s").is_none());
    /// assert!(RateLimit::parse("fast").is_none());
    /// ```
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        let (n, per) = s.trim().split_once('/').unwrap_or((s.trim(), "s"));
        let n: f64 = n.trim().parse().ok()?;
        let secs = match per.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            _ => return None,
        };
        Self::per_second(n / secs)
    }

    fn floor(&self) -> f64 {
        (self.max_per_sec * FLOOR_FRACTION).max(f64::MIN_POSITIVE)
    }

    fn capacity(rate: f64) -> f64 {
        (rate * 0.1).max(1.0)
    }
}

/// The shared limiter state of one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimiterState {
    /// The rate allowed now (messages per second).
    pub rate: f64,
    /// Tokens in the bucket at `last_ms`.
    pub tokens: f64,
    /// When `tokens` was computed (Unix ms).
    pub last_ms: i64,
    /// Nothing is sent before this (a `Retry-After`), Unix ms.
    pub paused_until_ms: i64,
    /// When the rate was last decreased (Unix ms).
    pub decreased_ms: i64,
}

impl LimiterState {
    /// A full-rate limiter with one token, at `now_ms`.
    #[must_use]
    pub fn new(limit: &RateLimit, now_ms: i64) -> Self {
        Self {
            rate: limit.max_per_sec,
            tokens: 1.0,
            last_ms: now_ms,
            paused_until_ms: 0,
            decreased_ms: i64::MIN / 2,
        }
    }

    /// The state encoded for the store.
    #[must_use]
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The state stored as `s`, or a fresh one when missing or malformed.
    #[must_use]
    pub fn decode(s: Option<&str>, limit: &RateLimit, now_ms: i64) -> Self {
        let mut st = s
            .and_then(|s| serde_json::from_str::<Self>(s).ok())
            .filter(|st| st.rate.is_finite() && st.tokens.is_finite())
            .unwrap_or_else(|| Self::new(limit, now_ms));
        // The configured maximum may have changed since it was stored.
        st.rate = st.rate.clamp(limit.floor(), limit.max_per_sec);
        st
    }

    fn refill(&mut self, now_ms: i64) {
        if now_ms > self.last_ms {
            let secs = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
            self.tokens = (self.tokens + secs * self.rate).min(LimiterState::cap(self.rate));
            self.last_ms = now_ms;
        }
    }

    fn cap(rate: f64) -> f64 {
        RateLimit::capacity(rate)
    }

    /// Take a token at `now_ms`, or say how long until one is available.
    ///
    /// # Errors
    /// The wait until a token is due (or the pause ends).
    pub fn take(&mut self, limit: &RateLimit, now_ms: i64) -> Result<(), Duration> {
        let _ = limit;
        if now_ms < self.paused_until_ms {
            return Err(Duration::from_millis(
                u64::try_from(self.paused_until_ms.saturating_sub(now_ms)).unwrap_or(0),
            ));
        }
        self.refill(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let secs = (1.0 - self.tokens) / self.rate;
            Err(Duration::from_millis((secs * 1000.0).ceil().max(1.0) as u64))
        }
    }

    /// The receiver throttled (429/503) at `now_ms`: multiply the rate by
    /// [`DECREASE_FACTOR`] (once per second at most) and pause the endpoint for `retry_after`
    /// (bounded by [`MAX_PAUSE`]).
    pub fn throttled(&mut self, limit: &RateLimit, now_ms: i64, retry_after: Option<Duration>) {
        self.refill(now_ms);
        if now_ms.saturating_sub(self.decreased_ms) >= DECREASE_GAP_MS {
            self.rate = (self.rate * DECREASE_FACTOR).max(limit.floor());
            self.decreased_ms = now_ms;
            self.tokens = self.tokens.min(0.0);
        }
        if let Some(wait) = retry_after {
            let wait = i64::try_from(wait.min(MAX_PAUSE).as_millis()).unwrap_or(0);
            self.paused_until_ms = self.paused_until_ms.max(now_ms.saturating_add(wait));
        }
    }

    /// A delivery succeeded: raise the rate by `step / rate`, where `step`
    /// is a twentieth of the maximum (at least 1), so at full pace the rate
    /// climbs by `step` messages per second each second, up to the maximum.
    /// Returns whether anything changed (nothing does at the maximum).
    pub fn succeeded(&mut self, limit: &RateLimit) -> bool {
        if self.rate >= limit.max_per_sec {
            return false;
        }
        let step = (limit.max_per_sec / 20.0).max(1.0);
        self.rate = (self.rate + step / self.rate.max(1.0)).min(limit.max_per_sec);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_holds_the_rate() {
        let limit = RateLimit::per_second(20.0).unwrap();
        let mut s = LimiterState::new(&limit, 0);
        // Over 5 s of asking every millisecond, about 100 tokens (+ the first).
        let mut taken = 0;
        for now in 0..5_000 {
            if s.take(&limit, now).is_ok() {
                taken += 1;
            }
        }
        assert!((100..=102).contains(&taken), "{taken}");
    }

    #[test]
    fn decrease_is_multiplicative_once_per_second_and_floored() {
        let limit = RateLimit::per_second(100.0).unwrap();
        let mut s = LimiterState::new(&limit, 0);
        s.throttled(&limit, 10_000, None);
        s.throttled(&limit, 10_100, None);
        assert_eq!(s.rate, 75.0);
        s.throttled(&limit, 11_000, None);
        assert_eq!(s.rate, 56.25);
        for i in 0..30 {
            s.throttled(&limit, 12_000 + i * 1_000, None);
        }
        assert_eq!(s.rate, 2.0);
    }

    #[test]
    fn retry_after_pauses_the_endpoint() {
        let limit = RateLimit::per_second(10.0).unwrap();
        let mut s = LimiterState::new(&limit, 0);
        s.throttled(&limit, 0, Some(Duration::from_secs(3600)));
        assert_eq!(s.take(&limit, 1_000), Err(Duration::from_millis(299_000)));
        assert!(s.take(&limit, 300_000).is_ok());
    }

    #[test]
    fn increase_is_additive_up_to_the_maximum() {
        let limit = RateLimit::per_second(20.0).unwrap();
        let mut s = LimiterState::new(&limit, 0);
        s.throttled(&limit, 0, None);
        assert_eq!(s.rate, 15.0);
        // Fifteen successes at 15/s (one second's worth) add about 1/s.
        for _ in 0..15 {
            assert!(s.succeeded(&limit));
        }
        assert!((s.rate - 16.0).abs() < 0.1, "{}", s.rate);
        for _ in 0..1000 {
            s.succeeded(&limit);
        }
        assert_eq!(s.rate, 20.0);
        assert!(!s.succeeded(&limit));
    }

    #[test]
    fn extreme_stored_values_never_panic() {
        let limit = RateLimit::per_second(5.0).unwrap();
        for (last, paused, decreased, tokens) in [
            (i64::MIN, i64::MIN, i64::MIN, -1e300),
            (i64::MAX, i64::MAX, i64::MAX, 1e300),
        ] {
            let json = format!(
                r#"{{"rate":5.0,"tokens":{tokens:e},"last_ms":{last},"paused_until_ms":{paused},"decreased_ms":{decreased}}}"#
            );
            let mut s = LimiterState::decode(Some(&json), &limit, 0);
            let _ = s.take(&limit, 0);
            s.throttled(&limit, 0, Some(Duration::MAX));
            s.succeeded(&limit);
        }
    }

    #[test]
    fn decode_clamps_and_survives_garbage() {
        let limit = RateLimit::per_second(5.0).unwrap();
        let mut s = LimiterState::new(&RateLimit::per_second(50.0).unwrap(), 0);
        s.rate = 50.0;
        assert_eq!(LimiterState::decode(Some(&s.encode()), &limit, 0).rate, 5.0);
        assert_eq!(
            LimiterState::decode(Some("{"), &limit, 7),
            LimiterState::new(&limit, 7)
        );
    }
}
