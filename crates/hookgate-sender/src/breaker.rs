//! Circuit breakers, one per endpoint URL: pure state and transitions.
//!
//! ```text
//! Closed ──(N consecutive failures, or ≥ P % of ≥ V attempts in the window)──▶ Open
//! Open ──(cool-down over: one delivery or the health probe tests it)──▶ HalfOpen
//! HalfOpen ──success──▶ Closed        HalfOpen ──failure──▶ Open (cool-down doubled, capped)
//! ```
//!
//! The state is a small serialisable value ([`BreakerState`]) that every
//! worker shares through the store ([`Queue::swap_endpoint_state`](crate::queue::Queue::swap_endpoint_state),
//! compare-and-set), so a URL opened by one worker is open for all. No I/O
//! happens here: the [worker](crate::worker) reads the state, asks
//! [`BreakerState::admit`], and writes back what [`BreakerState::record`]
//! or [`BreakerState::start_probe`] changed.
//!
//! ```
//! use std::time::Duration;
//! use hookgate_sender::breaker::{Admission, BreakerConfig, BreakerState, Phase};
//!
//! let cfg = BreakerConfig::default().with_failures(2);
//! let mut b = BreakerState::default();
//! assert_eq!(b.admit(0), Admission::Closed);
//! b.record(&cfg, false, 0);
//! assert_eq!(b.record(&cfg, false, 1), Some((Phase::Closed, Phase::Open)));
//! assert!(matches!(b.admit(2), Admission::Open { .. }));
//! // After the cool-down, one delivery probes it.
//! let later = 1 + 30_000;
//! assert_eq!(b.admit(later), Admission::Probe);
//! b.start_probe(later, Duration::from_secs(10));
//! assert!(matches!(b.admit(later), Admission::Open { .. })); // one probe at a time
//! assert_eq!(b.record(&cfg, true, later + 5), Some((Phase::HalfOpen, Phase::Closed)));
//! ```
//!
//! # Failure ratio
//! Successes are written to the shared state only while it is not the
//! default (a failure in the window, a streak, or not closed), so a healthy
//! URL costs no write per delivery. The ratio therefore counts the
//! successes since the first failure in the window, not those before it:
//! it errs towards opening a little early on an intermittently failing URL.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default consecutive failures that open a breaker.
pub const DEFAULT_FAILURES: u32 = 5;
/// Default failure percentage (of at least [`DEFAULT_MIN_VOLUME`] attempts in the window) that opens a breaker.
pub const DEFAULT_FAILURE_PERCENT: u8 = 50;
/// Default minimum attempts in the window before the ratio counts.
pub const DEFAULT_MIN_VOLUME: u32 = 20;
/// Default sliding window of the failure ratio.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Default first cool-down before a half-open probe.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);
/// Default cap of the doubling cool-down.
pub const DEFAULT_MAX_COOLDOWN: Duration = Duration::from_secs(600);
/// Buckets of the sliding window.
const BUCKETS: i64 = 6;

/// When a URL's breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerConfig {
    /// Consecutive failures that open it (0: never by count).
    pub failures: u32,
    /// Failure percentage that opens it, once the window holds `min_volume` attempts (0: never by ratio).
    pub failure_percent: u8,
    /// Attempts the window must hold before the ratio counts.
    pub min_volume: u32,
    /// The ratio's sliding window, milliseconds.
    pub window_ms: u64,
    /// First cool-down, milliseconds; doubled while probes fail.
    pub cooldown_ms: u64,
    /// Cap of the cool-down, milliseconds.
    pub max_cooldown_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: DEFAULT_FAILURES,
            failure_percent: DEFAULT_FAILURE_PERCENT,
            min_volume: DEFAULT_MIN_VOLUME,
            window_ms: ms(DEFAULT_WINDOW),
            cooldown_ms: ms(DEFAULT_COOLDOWN),
            max_cooldown_ms: ms(DEFAULT_MAX_COOLDOWN),
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ims(d: u64) -> i64 {
    i64::try_from(d).unwrap_or(i64::MAX)
}

impl BreakerConfig {
    /// Consecutive failures that open the breaker (default 5; 0 turns the count rule off).
    #[must_use]
    pub fn with_failures(mut self, n: u32) -> Self {
        self.failures = n;
        self
    }

    /// Open at `percent` % failures of at least `min_volume` attempts within `window`
    /// (default 50 % of 20 in 60 s; a percent of 0 turns the ratio rule off).
    #[must_use]
    pub fn with_failure_ratio(mut self, percent: u8, min_volume: u32, window: Duration) -> Self {
        self.failure_percent = percent.min(100);
        self.min_volume = min_volume;
        self.window_ms = ms(window).max(1);
        self
    }

    /// First cool-down (default 30 s), doubled while probes fail up to
    /// `max` (default 10 min; raised to `cooldown` if below it).
    #[must_use]
    pub fn with_cooldown(mut self, cooldown: Duration, max: Duration) -> Self {
        self.cooldown_ms = ms(cooldown).max(1);
        self.max_cooldown_ms = ms(max).max(self.cooldown_ms);
        self
    }

    /// The first cool-down.
    #[must_use]
    pub fn cooldown(&self) -> Duration {
        Duration::from_millis(self.cooldown_ms)
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Deliveries go through.
    #[default]
    Closed,
    /// Deliveries skip this URL until the cool-down is over.
    Open,
    /// One probe (a delivery or the health check) is testing the URL.
    HalfOpen,
}

impl Phase {
    /// `closed`, `open` or `half_open` (logs, metrics, `endpoint show`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Successes and failures in one slice of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Start of the slice, Unix ms.
    pub start_ms: i64,
    /// Successes.
    pub ok: u32,
    /// Failures.
    pub failed: u32,
}

/// One URL's breaker, as shared through the store.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerState {
    /// Where it is.
    pub phase: Phase,
    /// Failures since the last success.
    pub consecutive: u32,
    /// The sliding window, oldest first.
    pub buckets: Vec<Bucket>,
    /// Open: when the cool-down ends (Unix ms).
    pub open_until_ms: i64,
    /// The cool-down in force, ms (0 while closed).
    pub cooldown_ms: u64,
    /// Half-open: until when the probe in flight owns the test (Unix ms).
    pub probe_until_ms: i64,
    /// When the phase last changed (Unix ms).
    pub changed_at_ms: i64,
}

/// What a breaker says about sending to its URL now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: send.
    Closed,
    /// The cool-down is over and no probe is in flight: send one delivery
    /// as the probe (after [`BreakerState::start_probe`] is stored).
    Probe,
    /// Open (or a probe is in flight): do not send for `retry_in`.
    Open {
        /// Until the next probe may start.
        retry_in: Duration,
    },
}

impl BreakerState {
    /// The state encoded for the store.
    #[must_use]
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The state stored as `s`; a malformed value reads as closed (a
    /// breaker fails open rather than blocking an endpoint on bad data).
    #[must_use]
    pub fn decode(s: &str) -> Self {
        serde_json::from_str(s).unwrap_or_default()
    }

    /// Whether a delivery may use this URL at `now_ms`.
    #[must_use]
    pub fn admit(&self, now_ms: i64) -> Admission {
        let wait = |until: i64| Admission::Open {
            retry_in: Duration::from_millis(
                u64::try_from(until.saturating_sub(now_ms))
                    .unwrap_or(0)
                    .max(1),
            ),
        };
        match self.phase {
            Phase::Closed => Admission::Closed,
            Phase::Open if now_ms < self.open_until_ms => wait(self.open_until_ms),
            Phase::HalfOpen if now_ms < self.probe_until_ms => wait(self.probe_until_ms),
            Phase::Open | Phase::HalfOpen => Admission::Probe,
        }
    }

    /// Mark a probe in flight until `now_ms + lease` (half-open), so other
    /// workers wait for its result.
    pub fn start_probe(&mut self, now_ms: i64, lease: Duration) {
        if self.phase != Phase::HalfOpen {
            self.changed_at_ms = now_ms;
        }
        self.phase = Phase::HalfOpen;
        self.probe_until_ms = now_ms.saturating_add(ims(ms(lease)));
    }

    /// The endpoint's health check answered 2xx at `now_ms`: an open
    /// breaker's cool-down ends now, so the next delivery probes the URL
    /// (half-open early). Returns whether anything changed.
    pub fn health_ok(&mut self, now_ms: i64) -> bool {
        if self.phase == Phase::Open && self.open_until_ms > now_ms {
            self.open_until_ms = now_ms;
            true
        } else {
            false
        }
    }

    /// Whether recording a success would change nothing worth a write.
    #[must_use]
    pub fn is_quiet(&self) -> bool {
        self.phase == Phase::Closed
            && self.consecutive == 0
            && self.buckets.iter().all(|b| b.failed == 0)
    }

    /// Record an attempt's result at `now_ms`; returns the phase change, if any.
    pub fn record(&mut self, cfg: &BreakerConfig, ok: bool, now_ms: i64) -> Option<(Phase, Phase)> {
        let before = self.phase;
        self.slide(cfg, now_ms);
        let bucket_ms = (ims(cfg.window_ms) / BUCKETS).max(1);
        let start = now_ms.saturating_sub(now_ms.rem_euclid(bucket_ms));
        if self.buckets.last().is_none_or(|b| b.start_ms != start) {
            self.buckets.push(Bucket {
                start_ms: start,
                ok: 0,
                failed: 0,
            });
        }
        let n = self.buckets.len() - 1;
        let bucket = &mut self.buckets[n];
        if ok {
            bucket.ok = bucket.ok.saturating_add(1);
            self.consecutive = 0;
            if before != Phase::Closed {
                self.phase = Phase::Closed;
                self.cooldown_ms = 0;
                self.buckets.clear();
            }
        } else {
            bucket.failed = bucket.failed.saturating_add(1);
            self.consecutive = self.consecutive.saturating_add(1);
            match before {
                Phase::HalfOpen => {
                    let next = self.cooldown_ms.saturating_mul(2).max(cfg.cooldown_ms);
                    self.open(cfg, next, now_ms);
                }
                // A late failure of a request started before it opened.
                Phase::Open => {}
                Phase::Closed if self.trips(cfg) => self.open(cfg, cfg.cooldown_ms, now_ms),
                Phase::Closed => {}
            }
        }
        if self.phase == before {
            None
        } else {
            self.changed_at_ms = now_ms;
            Some((before, self.phase))
        }
    }

    fn open(&mut self, cfg: &BreakerConfig, cooldown_ms: u64, now_ms: i64) {
        self.phase = Phase::Open;
        self.cooldown_ms = cooldown_ms.min(cfg.max_cooldown_ms.max(cfg.cooldown_ms));
        self.open_until_ms = now_ms.saturating_add(ims(self.cooldown_ms));
        self.probe_until_ms = 0;
        self.buckets.clear();
    }

    fn trips(&self, cfg: &BreakerConfig) -> bool {
        if cfg.failures > 0 && self.consecutive >= cfg.failures {
            return true;
        }
        if cfg.failure_percent == 0 {
            return false;
        }
        let (ok, failed) = self.buckets.iter().fold((0u64, 0u64), |(o, f), b| {
            (o + u64::from(b.ok), f + u64::from(b.failed))
        });
        let total = ok + failed;
        total >= u64::from(cfg.min_volume.max(1))
            && failed * 100 >= u64::from(cfg.failure_percent) * total
    }

    fn slide(&mut self, cfg: &BreakerConfig, now_ms: i64) {
        let from = now_ms.saturating_sub(ims(cfg.window_ms));
        self.buckets.retain(|b| b.start_ms > from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_success_resets() {
        let cfg = BreakerConfig::default().with_failures(3);
        let mut b = BreakerState::default();
        assert_eq!(b.record(&cfg, false, 0), None);
        assert_eq!(b.record(&cfg, false, 1), None);
        assert_eq!(b.record(&cfg, true, 2), None);
        assert_eq!(b.consecutive, 0);
        b.record(&cfg, false, 3);
        b.record(&cfg, false, 4);
        assert_eq!(b.record(&cfg, false, 5), Some((Phase::Closed, Phase::Open)));
        assert_eq!(
            b.admit(6),
            Admission::Open {
                retry_in: Duration::from_millis(30_000 - 1)
            }
        );
    }

    #[test]
    fn opens_on_failure_ratio_with_minimum_volume() {
        let cfg = BreakerConfig::default()
            .with_failures(0)
            .with_failure_ratio(50, 10, Duration::from_secs(60));
        let mut b = BreakerState::default();
        // Alternate: 50 % failures, but only 9 attempts: stays closed.
        for i in 0..9 {
            assert_eq!(b.record(&cfg, i % 2 == 1, i64::from(i) * 100), None, "{i}");
        }
        assert_eq!(b.phase, Phase::Closed);
        // The tenth (a failure) makes 5 of 10.
        assert_eq!(
            b.record(&cfg, false, 1_000),
            Some((Phase::Closed, Phase::Open))
        );
    }

    #[test]
    fn old_attempts_leave_the_window() {
        let cfg = BreakerConfig::default()
            .with_failures(0)
            .with_failure_ratio(50, 4, Duration::from_secs(60));
        let mut b = BreakerState::default();
        b.record(&cfg, false, 0);
        b.record(&cfg, false, 1);
        b.record(&cfg, false, 2);
        // A minute later, the three failures are out of the window.
        assert_eq!(b.record(&cfg, false, 70_000), None);
        assert_eq!(b.buckets.len(), 1);
    }

    #[test]
    fn half_open_probe_closes_or_reopens_with_doubled_cooldown() {
        let cfg = BreakerConfig::default()
            .with_failures(1)
            .with_cooldown(Duration::from_secs(10), Duration::from_secs(25));
        let mut b = BreakerState::default();
        b.record(&cfg, false, 0);
        assert_eq!(b.cooldown_ms, 10_000);
        assert_eq!(b.admit(10_000), Admission::Probe);
        b.start_probe(10_000, Duration::from_secs(5));
        assert_eq!(b.phase, Phase::HalfOpen);
        assert!(matches!(b.admit(12_000), Admission::Open { .. }));
        // The probe fails: open for 20 s.
        assert_eq!(
            b.record(&cfg, false, 12_000),
            Some((Phase::HalfOpen, Phase::Open))
        );
        assert_eq!(b.open_until_ms, 32_000);
        b.start_probe(32_000, Duration::from_secs(5));
        b.record(&cfg, false, 33_000);
        assert_eq!(b.cooldown_ms, 25_000, "capped");
        // A probe whose lease ran out without a result lets another probe.
        b.start_probe(58_000, Duration::from_secs(5));
        assert_eq!(b.admit(63_001), Admission::Probe);
        assert_eq!(
            b.record(&cfg, true, 63_002),
            Some((Phase::HalfOpen, Phase::Closed))
        );
        assert!(b.is_quiet());
    }

    #[test]
    fn health_check_ends_the_cooldown_early() {
        let cfg = BreakerConfig::default().with_failures(1);
        let mut b = BreakerState::default();
        assert!(!b.health_ok(0), "closed: nothing to do");
        b.record(&cfg, false, 0);
        assert!(matches!(b.admit(1_000), Admission::Open { .. }));
        assert!(b.health_ok(1_000));
        assert_eq!(b.admit(1_000), Admission::Probe);
    }

    #[test]
    fn extreme_stored_values_never_panic() {
        let cfg = BreakerConfig::default();
        for v in [i64::MIN, i64::MAX] {
            let json = format!(
                r#"{{"phase":"half_open","consecutive":4294967295,"buckets":[{{"start_ms":{v},"ok":4294967295,"failed":4294967295}}],"open_until_ms":{v},"cooldown_ms":18446744073709551615,"probe_until_ms":{v},"changed_at_ms":{v}}}"#
            );
            let mut b = BreakerState::decode(&json);
            assert_eq!(b.phase, Phase::HalfOpen, "{json}");
            let _ = b.admit(0);
            b.start_probe(0, Duration::MAX);
            b.record(&cfg, false, 0);
            b.record(&cfg, true, 0);
            b.health_ok(0);
        }
    }

    #[test]
    fn malformed_state_reads_as_closed_and_round_trips() {
        assert_eq!(BreakerState::decode("nope"), BreakerState::default());
        let cfg = BreakerConfig::default().with_failures(1);
        let mut b = BreakerState::default();
        b.record(&cfg, false, 5);
        assert_eq!(BreakerState::decode(&b.encode()), b);
    }
}
