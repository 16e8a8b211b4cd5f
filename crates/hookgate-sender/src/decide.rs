//! The one place a delivery's next step is decided: a pure function from
//! what happened to a [`Transition`] and its side [`Effect`]s.
//!
//! The [worker](crate::worker) leases, asks [`plan`] whether and where to
//! attempt (disabled endpoint → hold; in-flight cap, open breakers or the
//! rate limiter → defer without spending an attempt; else which URL, and
//! which shared state to claim first), attempts, calls [`decide_with`],
//! applies the effects (breaker, limiter, failure streak, disable),
//! settles the transition and reports; it makes no decision of its own.
//! No I/O happens here, so every rule is unit-tested below.
//!
//! ```
//! use std::time::Duration;
//! use hookgate_sender::decide::{decide, Decision, Effect, Happened};
//! use hookgate_sender::queue::{DeadReason, DeliveryKey, Job, Transition};
//! use hookgate_sender::{retry::RetryPolicy, Message};
//!
//! let job = Job {
//!     key: DeliveryKey { endpoint: "ep".into(), message_id: "m".into() },
//!     message: Message::new("t", "{}"),
//!     attempts: 1,
//!     next_attempt_ms: 0,
//! };
//! let policy = RetryPolicy::default();
//! let mut rng = rand::thread_rng();
//! let d = decide(&job, &Happened::EndpointMissing, &policy, job.message.created_at_ms, &mut rng);
//! assert_eq!(d.transition, Transition::Dead(DeadReason::UnknownEndpoint));
//! assert!(d.effects.is_empty());
//! // A disabled endpoint keeps its messages until it is enabled again.
//! let d = decide(&job, &Happened::EndpointDisabled, &policy, job.message.created_at_ms, &mut rng);
//! assert_eq!(d.transition, Transition::Hold);
//! ```

use std::time::Duration;

use rand::Rng;

use crate::{
    breaker::{Admission, BreakerState},
    delivery::AttemptResult,
    limiter::LimiterState,
    outcome::Class,
    queue::{DeadReason, DeferReason, Job, Transition},
    retry::{GiveUpReason, RetryDecision, RetryInput, RetryPolicy},
    state::EndpointHealth,
    Endpoint,
};

/// What happened to a leased job before its outcome is settled.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Happened {
    /// An attempt was made (it may have failed before reaching the network).
    Attempted(AttemptResult),
    /// No endpoint with the job's endpoint id is stored.
    EndpointMissing,
    /// The stored endpoint is invalid.
    EndpointInvalid(String),
    /// The endpoint is disabled.
    EndpointDisabled,
    /// The endpoint could not be loaded (store error or deadline); no
    /// attempt was made.
    StoreFailed(String),
    /// The lease ran out without an outcome (a crashed or stalled worker),
    /// as the rescuer finds it.
    LeaseExpired,
}

/// A side effect of a decision, applied by the worker before it settles.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// Disable the endpoint (the receiver answered `410 Gone`).
    DisableEndpoint,
    /// Record the attempt's result in URL `url`'s breaker.
    Breaker {
        /// The URL's index.
        url: usize,
        /// Whether the URL answered sanely (2xx, or a 4xx: it is up).
        ok: bool,
    },
    /// The receiver throttled (429/503): slow the endpoint's rate limiter
    /// down and pause it for `retry_after`.
    Throttled {
        /// The receiver's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// A delivery succeeded: let the rate limiter climb back.
    Sped,
    /// Record the attempt in the endpoint's failure streak, which may
    /// disable it (see [`crate::lifecycle`]).
    Streak {
        /// Whether it was delivered.
        ok: bool,
    },
}

/// What [`decide`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// The transition to settle.
    pub transition: Transition,
    /// Effects to apply first.
    pub effects: Vec<Effect>,
}

impl Decision {
    fn just(transition: Transition) -> Self {
        Self {
            transition,
            effects: Vec::new(),
        }
    }
}

/// Whether a job leased with `attempts` counted (this lease's included) may
/// still be attempted under `policy`. A job leased past its budget — its
/// earlier leases ran out without an outcome (crashed or stalled workers) —
/// is dead-lettered without another request.
#[must_use]
pub fn may_attempt(job: &Job, policy: &RetryPolicy) -> bool {
    job.attempts <= policy.max_attempts()
}

/// The transition for a job leased past its budget (see [`may_attempt`]).
#[must_use]
pub fn over_budget(job: &Job) -> Decision {
    Decision::just(Transition::Dead(DeadReason::Exhausted {
        last: format!(
            "{} leases ended without a recorded outcome (worker crash or lost lease)",
            job.attempts.saturating_sub(1)
        ),
    }))
}

/// Decide what follows `happened` for `job` (leased, its attempts counted
/// this lease included) under `policy`, at `now_ms` (the worker's clock,
/// used only against the message's age; delays are relative and the store
/// adds them to its own clock).
pub fn decide(
    job: &Job,
    happened: &Happened,
    policy: &RetryPolicy,
    now_ms: i64,
    rng: &mut impl Rng,
) -> Decision {
    let result = match happened {
        Happened::EndpointMissing => {
            return Decision::just(Transition::Dead(DeadReason::UnknownEndpoint))
        }
        Happened::EndpointInvalid(detail) => {
            return Decision::just(Transition::Dead(DeadReason::InvalidEndpoint {
                detail: detail.clone(),
            }))
        }
        // Kept until the endpoint is enabled again (or dead-lettered by hand).
        Happened::EndpointDisabled => return Decision::just(Transition::Hold),
        Happened::StoreFailed(detail) => {
            // No request was made, but the lease spent an attempt: retry on
            // the policy's schedule, within the budget.
            return retry_or_give_up(job, policy, now_ms, None, detail, rng);
        }
        Happened::LeaseExpired => {
            return retry_or_give_up(
                job,
                policy,
                now_ms,
                None,
                "lease expired without an outcome (worker crash or stall)",
                rng,
            );
        }
        Happened::Attempted(result) => result,
    };
    decide_attempt(job, result, &Context::plain(policy), now_ms, rng)
}

/// What [`decide_with`] knows about the endpoint besides the retry policy.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Context<'a> {
    /// The retry policy in force for the endpoint.
    pub policy: &'a RetryPolicy,
    /// Which URL was attempted.
    pub url: usize,
    /// The endpoint has an adaptive rate limit: a `429` defers without
    /// spending an attempt, and `429`/`503` slow the limiter down.
    pub rate_limited: bool,
    /// The endpoint may be disabled by continuous failure (record the streak).
    pub auto_disable: bool,
}

impl<'a> Context<'a> {
    /// Only a retry policy: no breaker, limiter or streak effects.
    #[must_use]
    pub fn plain(policy: &'a RetryPolicy) -> Self {
        Self {
            policy,
            url: usize::MAX,
            rate_limited: false,
            auto_disable: false,
        }
    }

    /// For an attempt to URL `url` of `endpoint` under `policy`.
    #[must_use]
    pub fn for_endpoint(policy: &'a RetryPolicy, endpoint: &Endpoint, url: usize) -> Self {
        Self {
            policy,
            url,
            rate_limited: endpoint.rate_limit.is_some(),
            auto_disable: endpoint.auto_disable.is_some(),
        }
    }
}

/// [`decide`] with the endpoint's [`Context`]: breaker, limiter and
/// failure-streak effects, and throttling deferred without spending an
/// attempt when the endpoint is rate-limited.
pub fn decide_with(
    job: &Job,
    happened: &Happened,
    ctx: &Context<'_>,
    now_ms: i64,
    rng: &mut impl Rng,
) -> Decision {
    match happened {
        Happened::Attempted(result) => decide_attempt(job, result, ctx, now_ms, rng),
        other => decide(job, other, ctx.policy, now_ms, rng),
    }
}

fn decide_attempt(
    job: &Job,
    result: &AttemptResult,
    ctx: &Context<'_>,
    now_ms: i64,
    rng: &mut impl Rng,
) -> Decision {
    let detail = result.reason.clone().unwrap_or_default();
    let status = result.attempt.status;
    let throttled = matches!(status, Some(429 | 503));
    let mut d = match result.class {
        Class::Delivered => Decision::just(Transition::Delivered),
        Class::Retry if ctx.rate_limited && status == Some(429) => {
            // Throttling is the limiter's business: no attempt spent.
            let delay = result.retry_after.unwrap_or(Duration::from_secs(1));
            defer_within_age(
                job,
                ctx.policy,
                now_ms,
                delay,
                DeferReason::RateLimited,
                &detail,
            )
        }
        Class::Retry => retry_or_give_up(job, ctx.policy, now_ms, result.retry_after, &detail, rng),
        Class::Permanent if is_refusal(result) => {
            Decision::just(Transition::Dead(DeadReason::Refused { detail }))
        }
        Class::Permanent => Decision::just(Transition::Dead(DeadReason::Permanent { detail })),
        Class::Gone => Decision {
            transition: Transition::Dead(DeadReason::Gone),
            effects: vec![Effect::DisableEndpoint],
        },
    };
    if ctx.url != usize::MAX {
        // 429 says nothing about the URL's health; a refusal or 410 neither.
        let breaker_ok = match result.class {
            Class::Delivered | Class::Permanent if !is_refusal(result) => Some(true),
            Class::Retry if status != Some(429) => Some(false),
            _ => None,
        };
        if let Some(ok) = breaker_ok {
            d.effects.push(Effect::Breaker { url: ctx.url, ok });
        }
    }
    if ctx.rate_limited {
        if throttled {
            d.effects.push(Effect::Throttled {
                retry_after: result.retry_after,
            });
        } else if result.class == Class::Delivered {
            d.effects.push(Effect::Sped);
        }
    }
    if ctx.auto_disable {
        match result.class {
            Class::Delivered => d.effects.push(Effect::Streak { ok: true }),
            Class::Retry if !(ctx.rate_limited && status == Some(429)) => {
                d.effects.push(Effect::Streak { ok: false });
            }
            _ => {}
        }
    }
    d
}

/// `Defer` for `delay`, unless that would take the message past the
/// policy's maximum age (then it is dead-lettered as expired).
fn defer_within_age(
    job: &Job,
    policy: &RetryPolicy,
    now_ms: i64,
    delay: Duration,
    reason: DeferReason,
    last: &str,
) -> Decision {
    if let Some(max_age) = policy.max_age() {
        let due = now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        let limit = job
            .message
            .created_at_ms
            .saturating_add(i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX));
        if due > limit {
            let last = if last.is_empty() {
                format!("deferred past the maximum age ({reason:?})")
            } else {
                last.to_owned()
            };
            return Decision::just(Transition::Dead(DeadReason::Expired { last }));
        }
    }
    Decision::just(Transition::Defer { delay, reason })
}

/// What [`plan`] answers before an attempt.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Plan {
    /// Attempt URL `url`, after storing the shared state changes below
    /// (compare-and-set; if another worker changed it first, plan again).
    Attempt {
        /// The URL's index.
        url: usize,
        /// URL `url`'s breaker with its half-open probe started (this
        /// attempt is the probe), to store first.
        probe: Option<BreakerState>,
        /// The limiter with this attempt's token taken, to store first.
        limiter: Option<LimiterState>,
    },
    /// Do not attempt: settle this (hold, defer, or expired).
    Skip(Decision),
}

/// What [`plan`] needs besides the job and the endpoint's shared state.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct PlanInput<'a> {
    /// The retry policy in force (its maximum age bounds deferrals).
    pub policy: &'a RetryPolicy,
    /// Attempts to this endpoint running in this worker now (this one excluded).
    pub in_flight: usize,
    /// The endpoint's in-flight cap in this worker.
    pub max_in_flight: usize,
    /// How long a delivery waits when the in-flight cap is reached.
    pub busy_delay: Duration,
    /// How long a half-open probe owns the test (the request timeout and a margin).
    pub probe_lease: Duration,
    /// An operator's one-shot delivery (`hookgate send`, `dlq replay`):
    /// open breakers do not defer it; when every URL is open it probes the
    /// first one (its result closes or re-opens that breaker).
    pub explicit: bool,
}

/// Decide whether and where to attempt `job` at `now_ms`: a disabled
/// endpoint holds; a full in-flight cap, all URLs' breakers open, or an
/// empty rate-limit bucket defer without spending an attempt (within the
/// maximum age); otherwise the first URL, in failover order, whose breaker
/// is closed or due for its half-open probe.
#[must_use]
pub fn plan(
    job: &Job,
    endpoint: &Endpoint,
    health: &EndpointHealth,
    input: &PlanInput<'_>,
    now_ms: i64,
) -> Plan {
    if endpoint.disabled {
        return Plan::Skip(Decision::just(Transition::Hold));
    }
    let defer = |delay: Duration, reason: DeferReason| {
        Plan::Skip(defer_within_age(
            job,
            input.policy,
            now_ms,
            delay,
            reason,
            "",
        ))
    };
    if input.in_flight >= input.max_in_flight {
        return defer(input.busy_delay, DeferReason::Busy);
    }
    let mut soonest: Option<Duration> = None;
    let mut chosen = None;
    for (i, b) in health.breakers.iter().enumerate() {
        match b.state.admit(now_ms) {
            Admission::Closed => {
                chosen = Some((i, None));
                break;
            }
            Admission::Probe => {
                let mut probing = b.state.clone();
                probing.start_probe(now_ms, input.probe_lease);
                chosen = Some((i, Some(probing)));
                break;
            }
            Admission::Open { retry_in } => {
                soonest = Some(soonest.map_or(retry_in, |s| s.min(retry_in)));
            }
        }
    }
    if chosen.is_none() && input.explicit {
        if let Some(b) = health.breakers.first() {
            let mut probing = b.state.clone();
            probing.start_probe(now_ms, input.probe_lease);
            chosen = Some((0, Some(probing)));
        }
    }
    let Some((url, probe)) = chosen else {
        return defer(
            soonest.unwrap_or(input.busy_delay),
            DeferReason::CircuitOpen,
        );
    };
    let limiter = match (&endpoint.rate_limit, &health.limiter) {
        (Some(limit), Some((state, _))) => {
            let mut next = state.clone();
            match next.take(limit, now_ms) {
                Ok(()) => Some(next),
                Err(wait) => return defer(wait, DeferReason::RateLimited),
            }
        }
        _ => None,
    };
    Plan::Attempt {
        url,
        probe,
        limiter,
    }
}

fn retry_or_give_up(
    job: &Job,
    policy: &RetryPolicy,
    now_ms: i64,
    retry_after: Option<Duration>,
    last: &str,
    rng: &mut impl Rng,
) -> Decision {
    let input = RetryInput {
        attempts_made: job.attempts.max(1),
        now_ms,
        created_at_ms: job.message.created_at_ms,
        retry_after,
    };
    let last = last.to_owned();
    Decision::just(match policy.decide(&input, rng) {
        RetryDecision::RetryAt { delay, .. } => Transition::Retry { delay },
        RetryDecision::GiveUp(GiveUpReason::MaxAge) => {
            Transition::Dead(DeadReason::Expired { last })
        }
        RetryDecision::GiveUp(_) => Transition::Dead(DeadReason::Exhausted { last }),
    })
}

/// Whether a permanent failure is the SSRF guard's refusal. The delivery
/// client marks those errors with a leading `refused` and no status.
// TODO(merge): a typed error kind on `AttemptResult` (delivery.rs belongs to
// another change in flight) would replace this prefix check.
fn is_refusal(result: &AttemptResult) -> bool {
    result.attempt.status.is_none()
        && result
            .attempt
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("refused"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        queue::{Attempt, DeliveryKey},
        Message,
    };
    use rand::{rngs::StdRng, SeedableRng};

    fn job(attempts: u32) -> Job {
        Job {
            key: DeliveryKey {
                endpoint: "ep".into(),
                message_id: "m".into(),
            },
            message: Message::new("t", "{}").with_id("m"),
            attempts,
            next_attempt_ms: 0,
        }
    }

    fn attempted(class: Class, status: Option<u16>, error: Option<&str>) -> Happened {
        Happened::Attempted(AttemptResult {
            attempt: Attempt {
                at_ms: 0,
                url: "https://example.com/".into(),
                status,
                latency_ms: 1,
                error: error.map(str::to_owned),
            },
            class,
            retry_after: None,
            remote_addr: None,
            reason: Some(
                error
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("HTTP {}", status.unwrap_or(0))),
            ),
        })
    }

    fn run(job: &Job, h: &Happened, policy: &RetryPolicy) -> Decision {
        let mut rng = StdRng::seed_from_u64(7);
        decide(job, h, policy, job.message.created_at_ms, &mut rng)
    }

    #[test]
    fn delivered() {
        let d = run(
            &job(1),
            &attempted(Class::Delivered, Some(200), None),
            &RetryPolicy::default(),
        );
        assert_eq!(d, Decision::just(Transition::Delivered));
    }

    #[test]
    fn retry_within_budget_then_exhausted() {
        let p = RetryPolicy::default().with_max_attempts(3);
        let h = attempted(Class::Retry, Some(503), None);
        for n in 1..3 {
            let d = run(&job(n), &h, &p);
            assert!(
                matches!(d.transition, Transition::Retry { .. }),
                "{n}: {d:?}"
            );
        }
        let d = run(&job(3), &h, &p);
        assert_eq!(
            d.transition,
            Transition::Dead(DeadReason::Exhausted {
                last: "HTTP 503".into()
            })
        );
    }

    #[test]
    fn retry_after_is_honoured_within_bound() {
        let p = RetryPolicy::default().with_max_age(None);
        let Happened::Attempted(mut r) = attempted(Class::Retry, Some(429), None) else {
            unreachable!()
        };
        r.retry_after = Some(Duration::from_secs(120));
        let d = run(&job(1), &Happened::Attempted(r), &p);
        assert_eq!(
            d.transition,
            Transition::Retry {
                delay: Duration::from_secs(120)
            }
        );
    }

    #[test]
    fn max_age_gives_up_as_expired() {
        let p = RetryPolicy::default().with_max_age(Some(Duration::from_secs(1)));
        let j = job(1);
        let mut rng = StdRng::seed_from_u64(1);
        let d = decide(
            &j,
            &attempted(Class::Retry, Some(500), None),
            &p,
            j.message.created_at_ms + 10_000,
            &mut rng,
        );
        assert!(matches!(
            d.transition,
            Transition::Dead(DeadReason::Expired { .. })
        ));
    }

    #[test]
    fn permanent_refused_and_gone() {
        let p = RetryPolicy::default();
        let d = run(&job(1), &attempted(Class::Permanent, Some(400), None), &p);
        assert_eq!(
            d.transition,
            Transition::Dead(DeadReason::Permanent {
                detail: "HTTP 400".into()
            })
        );
        let d = run(
            &job(1),
            &attempted(
                Class::Permanent,
                None,
                Some("refused: 127.0.0.1 is loopback"),
            ),
            &p,
        );
        assert!(matches!(
            d.transition,
            Transition::Dead(DeadReason::Refused { .. })
        ));
        let d = run(&job(1), &attempted(Class::Gone, Some(410), None), &p);
        assert_eq!(d.transition, Transition::Dead(DeadReason::Gone));
        assert_eq!(d.effects, vec![Effect::DisableEndpoint]);
    }

    #[test]
    fn endpoint_problems_dead_letter_without_attempt() {
        let p = RetryPolicy::default();
        assert_eq!(
            run(&job(1), &Happened::EndpointMissing, &p).transition,
            Transition::Dead(DeadReason::UnknownEndpoint)
        );
        assert_eq!(
            run(&job(1), &Happened::EndpointInvalid("bad".into()), &p).transition,
            Transition::Dead(DeadReason::InvalidEndpoint {
                detail: "bad".into()
            })
        );
    }

    #[test]
    fn store_failure_spends_the_leased_attempt() {
        let p = RetryPolicy::default().with_max_attempts(2);
        let h = Happened::StoreFailed("timeout".into());
        assert!(matches!(
            run(&job(1), &h, &p).transition,
            Transition::Retry { .. }
        ));
        assert!(matches!(
            run(&job(2), &h, &p).transition,
            Transition::Dead(DeadReason::Exhausted { .. })
        ));
    }

    fn endpoint(urls: usize) -> Endpoint {
        let mut ep = Endpoint::new(
            "ep",
            "https://a.example/",
            hookgate_core::Scheme::GitHub,
            "s",
        )
        .unwrap()
        .with_breaker(crate::breaker::BreakerConfig::default().with_failures(1));
        for i in 1..urls {
            ep = ep.with_url(format!("https://b{i}.example/")).unwrap();
        }
        ep
    }

    fn input(policy: &RetryPolicy) -> PlanInput<'_> {
        PlanInput {
            policy,
            in_flight: 0,
            max_in_flight: 4,
            busy_delay: Duration::from_secs(1),
            probe_lease: Duration::from_secs(10),
            explicit: false,
        }
    }

    fn health(ep: &Endpoint, open: &[usize], now: i64) -> EndpointHealth {
        let mut h = EndpointHealth::from_records(ep, &[], now);
        for &i in open {
            h.breakers[i].state.record(&ep.breaker, false, now);
        }
        h
    }

    #[test]
    fn plan_fails_over_to_the_first_closed_url() {
        let p = RetryPolicy::default();
        let ep = endpoint(3);
        let j = job(1);
        let now = j.message.created_at_ms;
        let attempt = |url| Plan::Attempt {
            url,
            probe: None,
            limiter: None,
        };
        assert_eq!(
            plan(&j, &ep, &health(&ep, &[], now), &input(&p), now),
            attempt(0)
        );
        assert_eq!(
            plan(&j, &ep, &health(&ep, &[0], now), &input(&p), now),
            attempt(1)
        );
        assert_eq!(
            plan(&j, &ep, &health(&ep, &[0, 1], now), &input(&p), now),
            attempt(2)
        );
    }

    #[test]
    fn plan_defers_without_an_attempt_when_all_open_then_probes_in_order() {
        let p = RetryPolicy::default();
        let ep = endpoint(2);
        let j = job(1);
        let now = j.message.created_at_ms;
        let h = health(&ep, &[0, 1], now);
        let Plan::Skip(d) = plan(&j, &ep, &h, &input(&p), now + 1) else {
            panic!("attempted while all open");
        };
        assert_eq!(
            d.transition,
            Transition::Defer {
                delay: Duration::from_millis(29_999),
                reason: DeferReason::CircuitOpen
            }
        );
        assert!(d.transition.refunds());
        // After the cool-down, the primary is probed first.
        let Plan::Attempt {
            url: 0,
            probe: Some(b),
            ..
        } = plan(&j, &ep, &h, &input(&p), now + 30_000)
        else {
            panic!("no probe");
        };
        assert_eq!(b.phase, crate::breaker::Phase::HalfOpen);
        // An operator's explicit send probes at once.
        let explicit = PlanInput {
            explicit: true,
            ..input(&p)
        };
        assert!(matches!(
            plan(&j, &ep, &h, &explicit, now + 1),
            Plan::Attempt {
                url: 0,
                probe: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn plan_holds_disabled_defers_busy_and_bounds_by_max_age() {
        let p = RetryPolicy::default().with_max_age(Some(Duration::from_secs(10)));
        let mut ep = endpoint(1);
        let j = job(1);
        let now = j.message.created_at_ms;
        let h = health(&ep, &[], now);
        let busy = PlanInput {
            in_flight: 4,
            ..input(&p)
        };
        assert!(matches!(
            plan(&j, &ep, &h, &busy, now),
            Plan::Skip(Decision {
                transition: Transition::Defer {
                    reason: DeferReason::Busy,
                    ..
                },
                ..
            })
        ));
        // Deferring past the maximum age dead-letters as expired.
        assert!(matches!(
            plan(&j, &ep, &h, &busy, now + 9_500),
            Plan::Skip(Decision {
                transition: Transition::Dead(DeadReason::Expired { .. }),
                ..
            })
        ));
        ep.disabled = true;
        assert_eq!(
            plan(&j, &ep, &h, &input(&p), now),
            Plan::Skip(Decision::just(Transition::Hold))
        );
    }

    #[test]
    fn plan_takes_a_limiter_token_or_defers() {
        let p = RetryPolicy::default();
        let ep = endpoint(1).with_rate_limit(crate::limiter::RateLimit::per_second(1.0).unwrap());
        let j = job(1);
        let now = j.message.created_at_ms;
        let mut h = health(&ep, &[], now);
        let Plan::Attempt {
            limiter: Some(l), ..
        } = plan(&j, &ep, &h, &input(&p), now)
        else {
            panic!("no token taken");
        };
        h.limiter = Some((l, 1));
        assert!(matches!(
            plan(&j, &ep, &h, &input(&p), now),
            Plan::Skip(Decision {
                transition: Transition::Defer {
                    reason: DeferReason::RateLimited,
                    ..
                },
                ..
            })
        ));
    }

    #[test]
    fn attempt_effects_feed_breaker_limiter_and_streak() {
        let p = RetryPolicy::default();
        let ep = endpoint(2).with_rate_limit(crate::limiter::RateLimit::per_second(5.0).unwrap());
        let ctx = Context::for_endpoint(&p, &ep, 1);
        let mut rng = StdRng::seed_from_u64(1);
        let j = job(1);
        let now = j.message.created_at_ms;
        let ok = decide_with(
            &j,
            &attempted(Class::Delivered, Some(200), None),
            &ctx,
            now,
            &mut rng,
        );
        assert_eq!(
            ok.effects,
            vec![
                Effect::Breaker { url: 1, ok: true },
                Effect::Sped,
                Effect::Streak { ok: true }
            ]
        );
        let fail = decide_with(
            &j,
            &attempted(Class::Retry, Some(503), None),
            &ctx,
            now,
            &mut rng,
        );
        assert!(matches!(fail.transition, Transition::Retry { .. }));
        assert_eq!(
            fail.effects,
            vec![
                Effect::Breaker { url: 1, ok: false },
                Effect::Throttled { retry_after: None },
                Effect::Streak { ok: false }
            ]
        );
        // 429 on a rate-limited endpoint: deferred, no attempt spent, not a breaker failure.
        let slow = decide_with(
            &j,
            &attempted(Class::Retry, Some(429), None),
            &ctx,
            now,
            &mut rng,
        );
        assert_eq!(
            slow.transition,
            Transition::Defer {
                delay: Duration::from_secs(1),
                reason: DeferReason::RateLimited
            }
        );
        assert_eq!(slow.effects, vec![Effect::Throttled { retry_after: None }]);
        // A 4xx means the URL is up.
        let bad = decide_with(
            &j,
            &attempted(Class::Permanent, Some(400), None),
            &ctx,
            now,
            &mut rng,
        );
        assert_eq!(bad.effects, vec![Effect::Breaker { url: 1, ok: true }]);
    }

    #[test]
    fn budget_counts_leases() {
        let p = RetryPolicy::default().with_max_attempts(2);
        assert!(may_attempt(&job(1), &p));
        assert!(may_attempt(&job(2), &p));
        assert!(!may_attempt(&job(3), &p));
        assert!(matches!(
            over_budget(&job(3)).transition,
            Transition::Dead(DeadReason::Exhausted { .. })
        ));
    }
}
