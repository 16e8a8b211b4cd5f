//! Tier presets: the SLO tiers operators run endpoints under.
//!
//! A [`Tier`] bundles a retry schedule, a maximum message age, breaker
//! thresholds, a rate limit and the alert thresholds the dashboards use
//! ([`TierPreset`]). [`Endpoint::with_tier`](crate::Endpoint::with_tier)
//! applies a preset; every field stays overridable afterwards with the
//! endpoint's own `with_*` setters (a later setter wins).
//!
//! | tier | retries | max age | breaker | rate | alert: success below / p95 above |
//! |---|---|---|---|---|---|
//! | `critical` | 12, from 10 s, ×3, cap 1 h | 3 days | 5 failures, 15 s cool-down | none | 99.9 % / 2 s |
//! | `standard` | 8, from 60 s, ×4, cap 24 h | 3 days | 5 failures, 30 s cool-down | none | 99 % / 5 s |
//! | `best-effort` | 3, from 5 min, ×4, cap 1 h | 6 h | 3 failures, 2 min cool-down | 10/s | 90 % / 30 s |
//!
//! ```
//! use hookgate_sender::tier::Tier;
//! let t: Tier = "best-effort".parse().unwrap();
//! assert_eq!(t, Tier::BestEffort);
//! assert_eq!(t.preset().retry.max_attempts(), 3);
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{breaker::BreakerConfig, limiter::RateLimit, retry::RetryPolicy};

/// An SLO tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Tier {
    /// Payments, security events: retry fast and long, alert early.
    Critical,
    /// The default schedule.
    Standard,
    /// Notifications nobody waits for: few retries, rate-limited.
    BestEffort,
}

/// What a tier sets.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TierPreset {
    /// Retry schedule and maximum age.
    pub retry: RetryPolicy,
    /// Breaker thresholds for every URL.
    pub breaker: BreakerConfig,
    /// Rate limit, if any.
    pub rate_limit: Option<RateLimit>,
    /// Alert when the delivery success ratio falls below this (0–1).
    pub alert_success_ratio: f64,
    /// Alert when the p95 attempt latency exceeds this.
    pub alert_p95_latency: Duration,
}

impl Tier {
    /// `critical`, `standard` or `best-effort`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Standard => "standard",
            Self::BestEffort => "best-effort",
        }
    }

    /// The tier's settings.
    #[must_use]
    pub fn preset(self) -> TierPreset {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        match self {
            Self::Critical => TierPreset {
                retry: RetryPolicy::default()
                    .with_max_attempts(12)
                    .with_base_delay(Duration::from_secs(10))
                    .with_multiplier(3)
                    .with_max_delay(hours(1))
                    .with_max_age(Some(hours(72))),
                breaker: BreakerConfig::default()
                    .with_cooldown(Duration::from_secs(15), Duration::from_secs(300)),
                rate_limit: None,
                alert_success_ratio: 0.999,
                alert_p95_latency: Duration::from_secs(2),
            },
            Self::Standard => TierPreset {
                retry: RetryPolicy::default(),
                breaker: BreakerConfig::default(),
                rate_limit: None,
                alert_success_ratio: 0.99,
                alert_p95_latency: Duration::from_secs(5),
            },
            Self::BestEffort => TierPreset {
                retry: RetryPolicy::default()
                    .with_max_attempts(3)
                    .with_base_delay(Duration::from_secs(300))
                    .with_max_delay(hours(1))
                    .with_max_age(Some(hours(6))),
                breaker: BreakerConfig::default()
                    .with_failures(3)
                    .with_cooldown(Duration::from_secs(120), Duration::from_secs(1800)),
                rate_limit: RateLimit::per_second(10.0),
                alert_success_ratio: 0.9,
                alert_p95_latency: Duration::from_secs(30),
            },
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tier name was not `critical`, `standard` or `best-effort`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tier (expected critical, standard or best-effort)")]
pub struct UnknownTier;

impl std::str::FromStr for Tier {
    type Err = UnknownTier;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "critical" => Ok(Self::Critical),
            "standard" => Ok(Self::Standard),
            "best-effort" | "best_effort" | "besteffort" => Ok(Self::BestEffort),
            _ => Err(UnknownTier),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_ordered() {
        for t in [Tier::Critical, Tier::Standard, Tier::BestEffort] {
            let p = t.preset();
            p.retry.validate().unwrap();
            assert_eq!(t.as_str().parse::<Tier>().unwrap(), t);
        }
        assert!(
            Tier::Critical.preset().retry.max_attempts()
                > Tier::BestEffort.preset().retry.max_attempts()
        );
        assert!("gold".parse::<Tier>().is_err());
    }
}
