//! [`StatusPolicy`]: which handler answers are final.

use std::{fmt, sync::Arc};

use http::StatusCode;

/// Decides whether a handler's answer is **final** (stored as done and
/// replayed to every later delivery of the event) or not (the claim is
/// released, so the sender's retry runs the handler again).
///
/// The layer uses [`DefaultStatusPolicy`] unless
/// [`with_status_policy`](super::VerifyWebhookLayer::with_status_policy) sets
/// another. Any `Fn(StatusCode) -> bool` closure is a policy:
///
/// ```
/// use hookgate_core::{Scheme, Verifier};
/// use hookgate_tower::{verify::DefaultStatusPolicy, verify::StatusPolicy, VerifyWebhookLayer};
/// use http::StatusCode;
///
/// let verifier = Verifier::from_secret_strings(Scheme::Stripe, ["whsec_live"])?;
/// // Also let a sender retry after 404 (say, a record not replicated yet).
/// let layer = VerifyWebhookLayer::new(verifier).with_status_policy(|status: StatusCode| {
///     status != StatusCode::NOT_FOUND && DefaultStatusPolicy.is_final(status)
/// });
/// # let _ = layer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Errors returned by the handler and panics are never final, whatever the
/// policy says.
pub trait StatusPolicy: Send + Sync + 'static {
    /// Whether `status` is the event's final answer.
    fn is_final(&self, status: StatusCode) -> bool;
}

impl<F> StatusPolicy for F
where
    F: Fn(StatusCode) -> bool + Send + Sync + 'static,
{
    fn is_final(&self, status: StatusCode) -> bool {
        self(status)
    }
}

/// The default [`StatusPolicy`]: 2xx, and 4xx other than 408, 409, 425 and
/// 429, are final; everything else (1xx, 3xx, 5xx, 408 Request Timeout, 409
/// Conflict, 425 Too Early, 429 Too Many Requests) is not, because senders
/// (hookgate's own included) retry those.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultStatusPolicy;

impl StatusPolicy for DefaultStatusPolicy {
    fn is_final(&self, status: StatusCode) -> bool {
        status.is_success()
            || (status.is_client_error()
                && !matches!(
                    status,
                    StatusCode::REQUEST_TIMEOUT
                        | StatusCode::CONFLICT
                        | StatusCode::TOO_EARLY
                        | StatusCode::TOO_MANY_REQUESTS
                ))
    }
}

/// A shared policy with a `Debug` that says nothing about it.
#[derive(Clone)]
pub(crate) struct Policy(pub(crate) Arc<dyn StatusPolicy>);

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StatusPolicy(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy() {
        for s in [200, 201, 204, 400, 401, 403, 404, 410, 413, 422] {
            let s = StatusCode::from_u16(s).unwrap();
            assert!(DefaultStatusPolicy.is_final(s), "{s}");
        }
        for s in [100, 301, 304, 408, 409, 425, 429, 500, 502, 503, 504] {
            let s = StatusCode::from_u16(s).unwrap();
            assert!(!DefaultStatusPolicy.is_final(s), "{s}");
        }
    }

    #[test]
    fn closures_are_policies() {
        let only_200 = |s: StatusCode| s == StatusCode::OK;
        assert!(only_200.is_final(StatusCode::OK));
        assert!(!only_200.is_final(StatusCode::CREATED));
    }
}
