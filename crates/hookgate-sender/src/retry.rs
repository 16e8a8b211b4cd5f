//! When to try again: exponential backoff with full jitter, a cap, a maximum
//! number of attempts and a maximum age, honouring `Retry-After`.
//!
//! [`RetryPolicy::decide`] is a pure function of its inputs and a random
//! number generator, so tests pass a seeded RNG and get exact answers. The
//! worker persists the answer with [`Queue::settle`](crate::Queue::settle) (a delay, which the store adds to its own clock);
//! nothing waits in memory.
//!
//! ```
//! use std::time::Duration;
//! use hookgate_sender::retry::{RetryDecision, RetryInput, RetryPolicy};
//! use rand::{rngs::StdRng, SeedableRng};
//!
//! let policy = RetryPolicy::default()
//!     .with_base_delay(Duration::from_millis(500))
//!     .with_max_delay(Duration::from_secs(30))
//!     .with_max_attempts(5);
//! let mut rng = StdRng::seed_from_u64(7);
//! let input = RetryInput { attempts_made: 1, now_ms: 10_000, created_at_ms: 9_000, retry_after: None };
//! match policy.decide(&input, &mut rng) {
//!     RetryDecision::RetryAt { delay, .. } => assert!(delay <= Duration::from_millis(500)),
//!     RetryDecision::GiveUp(reason) => unreachable!("{reason}"),
//! }
//! ```
//!
//! # The default schedule
//!
//! 8 attempts (the first plus 7 retries) over about a day. Retry *n* waits a
//! uniformly random time in `[0, min(cap, base × multiplier^(n-1))]` ("full
//! jitter", which spreads a crowd of failed deliveries out instead of
//! retrying them in lockstep when a receiver comes back), with base 60 s,
//! multiplier 4 and cap 24 h:
//!
//! | retry | upper bound | mean wait | mean time since first attempt |
//! |---|---|---|---|
//! | 1 | 1 min | 30 s | 30 s |
//! | 2 | 4 min | 2 min | 2.5 min |
//! | 3 | 16 min | 8 min | 10.5 min |
//! | 4 | 64 min | 32 min | 43 min |
//! | 5 | 4 h 16 min | 2 h 8 min | 2 h 51 min |
//! | 6 | 17 h 4 min | 8 h 32 min | 11 h 23 min |
//! | 7 | 24 h (cap) | 12 h | 23 h 23 min |
//!
//! So the last attempt comes after about a day on average (at most about two
//! days), and the maximum age of 3 days is a backstop that never cuts the
//! default schedule short. Why this shape: Svix (Standard Webhooks) uses 8
//! attempts at fixed steps of 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about
//! 27 h); Stripe retries live-mode events with exponential backoff for up to
//! 3 days; GitHub does not retry at all (redelivery is manual). Early retries
//! within minutes catch blips and deploys; the long tail rides out a receiver
//! that is down for hours. A multiplier of 4 rather than 2 is what lets 8
//! attempts reach a day while the first retry still comes within a minute
//! (with 2, a day would need a first retry window of about 20 minutes).
//!
//! # `Retry-After`
//!
//! A `Retry-After` on a retryable response (usually 429 or 503) is a lower
//! bound: the next attempt waits `max(jittered delay, Retry-After)`. The
//! receiver's value is clamped to [`max_retry_after`](RetryPolicy::with_max_retry_after)
//! (default 1 h), so a buggy or hostile receiver cannot park a message for
//! days. Delta-seconds and HTTP dates are both understood
//! ([`parse_retry_after`]); a date in the past means "now".
//!
//! # Giving up
//!
//! After [`max_attempts`](RetryPolicy::with_max_attempts) attempts, or when the
//! next attempt would fall after `created_at + max_age`. A replayed dead
//! letter starts counting attempts from zero but keeps its `created_at`, so a
//! replay older than the maximum age gets one attempt.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// Default first retry window.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_secs(60);
/// Default growth per retry.
pub const DEFAULT_MULTIPLIER: u32 = 4;
/// Default cap on one wait.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(24 * 3600);
/// Default number of attempts, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// Default maximum age of a message.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3 * 24 * 3600);
/// Default bound on a receiver's `Retry-After`.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Backoff settings. See the [module docs](self) for the default schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    base: Duration,
    multiplier: u32,
    cap: Duration,
    max_attempts: u32,
    max_age: Option<Duration>,
    max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: DEFAULT_BASE_DELAY,
            multiplier: DEFAULT_MULTIPLIER,
            cap: DEFAULT_MAX_DELAY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_age: Some(DEFAULT_MAX_AGE),
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

/// What happened, as the policy needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryInput {
    /// Attempts made so far, the one that just failed included (≥ 1).
    pub attempts_made: u32,
    /// Now, Unix milliseconds.
    pub now_ms: i64,
    /// The message's creation time, Unix milliseconds.
    pub created_at_ms: i64,
    /// The receiver's `Retry-After`, if it sent one (see [`parse_retry_after`]).
    pub retry_after: Option<Duration>,
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again at `at_ms` (= now + `delay`).
    RetryAt {
        /// Unix milliseconds.
        at_ms: i64,
        /// The wait.
        delay: Duration,
    },
    /// Stop: dead-letter the delivery.
    GiveUp(GiveUpReason),
}

/// Why the policy gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The maximum number of attempts was made.
    #[error("exhausted: {0} attempts")]
    Exhausted(u32),
    /// The next attempt would come after the maximum age.
    #[error("max age exceeded")]
    MaxAge,
}

/// A setting is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetryPolicyError {
    /// `max_attempts` is zero.
    #[error("max attempts must be at least 1")]
    ZeroAttempts,
    /// `multiplier` is zero.
    #[error("multiplier must be at least 1")]
    ZeroMultiplier,
    /// The base delay is zero: every wait would be zero, so a failing
    /// receiver would be retried in a tight loop.
    #[error("base delay must be greater than zero")]
    ZeroBaseDelay,
    /// The base delay exceeds the cap.
    #[error("base delay exceeds max delay")]
    BaseAboveCap,
}

impl RetryPolicy {
    /// The default policy (same as [`Default`]).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The upper bound of the first retry's wait (default 60 s). Must be
    /// greater than zero ([`validate`](Self::validate)).
    #[must_use]
    pub fn with_base_delay(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// Growth of the upper bound per retry (default 4).
    #[must_use]
    pub fn with_multiplier(mut self, multiplier: u32) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Cap on one wait (default 24 h).
    #[must_use]
    pub fn with_max_delay(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// Attempts in all, the first included (default 8).
    #[must_use]
    pub fn with_max_attempts(mut self, max: u32) -> Self {
        self.max_attempts = max;
        self
    }

    /// Give up when the next attempt would come later than this after the
    /// message's creation (default 3 days); `None` for no limit.
    #[must_use]
    pub fn with_max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }

    /// Bound on a receiver's `Retry-After` (default 1 h).
    #[must_use]
    pub fn with_max_retry_after(mut self, bound: Duration) -> Self {
        self.max_retry_after = bound;
        self
    }

    /// Attempts in all.
    #[must_use]
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The maximum age of a message, if any (also bounds how long deferred
    /// deliveries wait).
    #[must_use]
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// Check the settings.
    ///
    /// # Errors
    /// Zero attempts, a zero multiplier, a zero base delay, or a base above
    /// the cap.
    pub fn validate(&self) -> Result<(), RetryPolicyError> {
        if self.max_attempts == 0 {
            return Err(RetryPolicyError::ZeroAttempts);
        }
        if self.multiplier == 0 {
            return Err(RetryPolicyError::ZeroMultiplier);
        }
        if self.base.is_zero() {
            return Err(RetryPolicyError::ZeroBaseDelay);
        }
        if self.base > self.cap {
            return Err(RetryPolicyError::BaseAboveCap);
        }
        Ok(())
    }

    /// The upper bound of the wait before retry `retry` (1-based):
    /// `min(cap, base × multiplier^(retry-1))`.
    #[must_use]
    pub fn window(&self, retry: u32) -> Duration {
        let mut window = self.base.min(self.cap);
        for _ in 1..retry {
            if window >= self.cap {
                break;
            }
            window = window.saturating_mul(self.multiplier).min(self.cap);
        }
        window
    }

    /// A full-jitter wait before retry `retry`: uniform in `[0, window(retry)]`.
    pub fn backoff(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let window = u64::try_from(self.window(retry).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.gen_range(0..=window))
    }

    /// Decide what follows a failed, retryable attempt.
    pub fn decide(&self, input: &RetryInput, rng: &mut impl Rng) -> RetryDecision {
        if input.attempts_made >= self.max_attempts {
            return RetryDecision::GiveUp(GiveUpReason::Exhausted(input.attempts_made));
        }
        let mut delay = self.backoff(input.attempts_made.max(1), rng);
        if let Some(after) = input.retry_after {
            delay = delay.max(after.min(self.max_retry_after));
        }
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        let at_ms = input.now_ms.saturating_add(delay_ms);
        if let Some(max_age) = self.max_age {
            let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
            if at_ms > input.created_at_ms.saturating_add(max_age_ms) {
                return RetryDecision::GiveUp(GiveUpReason::MaxAge);
            }
        }
        RetryDecision::RetryAt { at_ms, delay }
    }
}

/// Parse a `Retry-After` value: delta-seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`), relative to `now`. A date in the past
/// is zero. `None` when the value is neither.
#[must_use]
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits to fit: effectively forever (the policy clamps it).
        return Some(Duration::from_secs(text.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    fn input(attempts_made: u32) -> RetryInput {
        RetryInput {
            attempts_made,
            now_ms: 1_000_000,
            created_at_ms: 1_000_000,
            retry_after: None,
        }
    }

    #[test]
    fn windows_grow_and_cap() {
        let p = RetryPolicy::default();
        let mins: Vec<u64> = (1..=7).map(|n| p.window(n).as_secs() / 60).collect();
        assert_eq!(mins, [1, 4, 16, 64, 256, 1024, 1440]);
        assert_eq!(p.window(1000), DEFAULT_MAX_DELAY);
        let p2 = RetryPolicy::default()
            .with_base_delay(Duration::from_millis(20))
            .with_multiplier(2)
            .with_max_delay(Duration::from_millis(100));
        let ms: Vec<u128> = (1..=5).map(|n| p2.window(n).as_millis()).collect();
        assert_eq!(ms, [20, 40, 80, 100, 100]);
    }

    #[test]
    fn jitter_stays_in_window_and_varies() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = std::collections::HashSet::new();
        for n in 1..=7 {
            for _ in 0..200 {
                let d = p.backoff(n, &mut rng);
                assert!(d <= p.window(n));
                seen.insert(d);
            }
        }
        assert!(seen.len() > 1000);
    }

    #[test]
    fn mean_delay_grows_until_the_cap() {
        // The compressed schedule the tests use: windows 20, 40, 80, 160, 200 ms.
        let p = RetryPolicy::default()
            .with_base_delay(Duration::from_millis(20))
            .with_multiplier(2)
            .with_max_delay(Duration::from_millis(200));
        let mut rng = StdRng::seed_from_u64(3);
        let means: Vec<f64> = (1..=6)
            .map(|n| {
                let total: u128 = (0..2000).map(|_| p.backoff(n, &mut rng).as_millis()).sum();
                total as f64 / 2000.0
            })
            .collect();
        for (n, w) in [
            (0, 10.0),
            (1, 20.0),
            (2, 40.0),
            (3, 80.0),
            (4, 100.0),
            (5, 100.0),
        ] {
            assert!(
                (means[n] - w).abs() < w * 0.1,
                "retry {}: mean {} vs {w}",
                n + 1,
                means[n]
            );
        }
        assert!(means.windows(2).take(4).all(|m| m[1] > m[0]));
    }

    #[test]
    fn seeded_rng_is_deterministic() {
        let p = RetryPolicy::default();
        let a = p.decide(&input(3), &mut StdRng::seed_from_u64(9));
        let b = p.decide(&input(3), &mut StdRng::seed_from_u64(9));
        assert_eq!(a, b);
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let p = RetryPolicy::default().with_max_attempts(3);
        let mut rng = StdRng::seed_from_u64(1);
        assert!(matches!(
            p.decide(&input(2), &mut rng),
            RetryDecision::RetryAt { .. }
        ));
        assert_eq!(
            p.decide(&input(3), &mut rng),
            RetryDecision::GiveUp(GiveUpReason::Exhausted(3))
        );
    }

    #[test]
    fn gives_up_past_max_age() {
        let p = RetryPolicy::default().with_max_age(Some(Duration::from_secs(60)));
        let mut rng = StdRng::seed_from_u64(1);
        let old = RetryInput {
            now_ms: 1_000_000 + 61_000,
            ..input(1)
        };
        assert_eq!(
            p.decide(&old, &mut rng),
            RetryDecision::GiveUp(GiveUpReason::MaxAge)
        );
        let none = RetryPolicy::default().with_max_age(None);
        assert!(matches!(
            none.decide(&old, &mut rng),
            RetryDecision::RetryAt { .. }
        ));
    }

    #[test]
    fn retry_after_is_a_clamped_lower_bound() {
        let p = RetryPolicy::default()
            .with_base_delay(Duration::from_millis(20))
            .with_max_delay(Duration::from_millis(100))
            .with_max_retry_after(Duration::from_secs(10));
        let mut rng = StdRng::seed_from_u64(1);
        for (after, want) in [(2, 2), (10, 10), (3600, 10)] {
            let i = RetryInput {
                retry_after: Some(Duration::from_secs(after)),
                ..input(1)
            };
            let RetryDecision::RetryAt { at_ms, delay } = p.decide(&i, &mut rng) else {
                panic!("gave up");
            };
            assert_eq!(delay, Duration::from_secs(want));
            assert_eq!(at_ms, 1_000_000 + 1000 * i64::try_from(want).unwrap());
        }
        // Smaller than the jittered delay: the jitter wins.
        let big = RetryPolicy::default();
        let i = RetryInput {
            retry_after: Some(Duration::ZERO),
            ..input(6)
        };
        let mut r1 = StdRng::seed_from_u64(5);
        let mut r2 = StdRng::seed_from_u64(5);
        assert_eq!(big.decide(&i, &mut r1), big.decide(&input(6), &mut r2),);
    }

    #[test]
    fn parses_retry_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00
        assert_eq!(parse_retry_after(b"2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(b" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(b"Wed, 21 Oct 2015 07:28:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after(b"Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after(b"99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in [&b""[..], b"-1", b"1.5", b"soon", b"\xff"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn validates() {
        assert!(RetryPolicy::default().validate().is_ok());
        // A zero base makes every wait zero: retries in a tight loop.
        assert_eq!(
            RetryPolicy::default()
                .with_base_delay(Duration::ZERO)
                .validate(),
            Err(RetryPolicyError::ZeroBaseDelay)
        );
        assert_eq!(
            RetryPolicy::default()
                .with_base_delay(Duration::ZERO)
                .with_max_delay(Duration::ZERO)
                .validate(),
            Err(RetryPolicyError::ZeroBaseDelay)
        );
        assert_eq!(
            RetryPolicy::default().with_max_attempts(0).validate(),
            Err(RetryPolicyError::ZeroAttempts)
        );
        assert_eq!(
            RetryPolicy::default()
                .with_base_delay(Duration::from_secs(10))
                .with_max_delay(Duration::from_secs(1))
                .validate(),
            Err(RetryPolicyError::BaseAboveCap)
        );
    }
}
