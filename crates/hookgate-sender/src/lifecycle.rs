//! Endpoint lifecycle: when continuous failure disables an endpoint.
//!
//! An endpoint is disabled by a `410 Gone` answer, or when it has failed
//! continuously for a period (default [`DEFAULT_DISABLE_AFTER`], 5 days,
//! counted from the first failure after the last success) with at least a
//! minimum number of failed attempts (default [`DEFAULT_MIN_FAILURES`]).
//! A disabled endpoint keeps its messages: workers [`Hold`](crate::queue::Transition::Hold)
//! them until it is enabled again ([`Sender::enable_endpoint`](crate::Sender::enable_endpoint)
//! releases them) or they are dead-lettered by hand.
//!
//! The streak is shared by every worker through the store, like the
//! breakers; [`FailureStreak::record`] is pure.
//!
//! ```
//! use std::time::Duration;
//! use hookgate_sender::lifecycle::{AutoDisable, FailureStreak};
//!
//! let rule = AutoDisable { after_ms: 60_000, min_failures: 3 };
//! let mut s = FailureStreak::default();
//! assert!(!s.record(&rule, false, 0));
//! assert!(!s.record(&rule, false, 70_000)); // long enough, but only 2 failures
//! assert!(s.record(&rule, false, 70_001));
//! s.record(&rule, true, 80_000); // a success ends the streak
//! assert_eq!(s, FailureStreak::default());
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default period of continuous failure that disables an endpoint.
pub const DEFAULT_DISABLE_AFTER: Duration = Duration::from_secs(5 * 24 * 3600);
/// Default minimum failed attempts within that period.
pub const DEFAULT_MIN_FAILURES: u32 = 10;

/// When continuous failure disables an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoDisable {
    /// Failing for this long (ms, from the first failure after the last success).
    pub after_ms: u64,
    /// With at least this many failed attempts.
    pub min_failures: u32,
}

impl Default for AutoDisable {
    fn default() -> Self {
        Self {
            after_ms: u64::try_from(DEFAULT_DISABLE_AFTER.as_millis()).unwrap_or(u64::MAX),
            min_failures: DEFAULT_MIN_FAILURES,
        }
    }
}

impl AutoDisable {
    /// Disable after failing for `after` with at least `min_failures` failed attempts.
    #[must_use]
    pub fn new(after: Duration, min_failures: u32) -> Self {
        Self {
            after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            min_failures,
        }
    }
}

/// An endpoint's current run of failures, shared through the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FailureStreak {
    /// The first failure after the last success (Unix ms), if failing.
    pub since_ms: Option<i64>,
    /// Failed attempts since then.
    pub failures: u32,
}

impl FailureStreak {
    /// The streak encoded for the store.
    #[must_use]
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The streak stored as `s` (none when missing or malformed).
    #[must_use]
    pub fn decode(s: Option<&str>) -> Self {
        s.and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    /// Record an attempt at `now_ms`; returns whether the endpoint should
    /// now be disabled under `rule`.
    pub fn record(&mut self, rule: &AutoDisable, ok: bool, now_ms: i64) -> bool {
        if ok {
            *self = Self::default();
            return false;
        }
        let since = *self.since_ms.get_or_insert(now_ms);
        self.failures = self.failures.saturating_add(1);
        let failing_for = u64::try_from(now_ms.saturating_sub(since)).unwrap_or(0);
        failing_for >= rule.after_ms && self.failures >= rule.min_failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_five_days_and_ten_failures() {
        let rule = AutoDisable::default();
        let day = 24 * 3600 * 1000;
        let mut s = FailureStreak::default();
        for i in 0..9 {
            assert!(!s.record(&rule, false, i * day / 2));
        }
        assert!(!s.record(&rule, false, 5 * day - 1));
        assert!(s.record(&rule, false, 5 * day));
        assert_eq!(FailureStreak::decode(Some(&s.encode())), s);
        assert_eq!(FailureStreak::decode(Some("x")), FailureStreak::default());
    }
}
