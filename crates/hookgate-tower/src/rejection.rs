//! Why the layer refused a request, as `application/problem+json` responses.
//!
//! One type per failure, each with [`status`](MalformedWebhook::status),
//! a stable [`kind`](MalformedWebhook::kind) and a conversion to a response,
//! grouped in [`WebhookRejection`] (the axum pattern).
//!
//! Problem `type`s are `https://hookgate.dev/problems/<kind>` URIs, stable
//! across releases (the URI is an identifier; nothing is served there):
//!
//! | status | kind | when |
//! |---|---|---|
//! | 403 | `source_not_allowed` | the client address is outside the [allow-list](crate::source) (checked first) |
//! | 400 | `malformed_webhook` | a required header is missing or malformed |
//! | 400 | `body_read_failed` | the request body could not be read |
//! | 401 | `timestamp_out_of_tolerance` | the signed timestamp is too old or in the future |
//! | 413 | `payload_too_large` | the body is over the layer's limit |
//! | 401 | `invalid_signature` | no signature matches an active secret |
//! | 409 | `duplicate_in_flight` | the same event is being handled right now (`Retry-After`) |
//! | 422 | `conflicting_duplicate` | the event id was seen with a different body |
//! | 503 | `store_unavailable` | the dedup store could not be reached (`Retry-After`) |
//!
//! Response bodies are short; the detail that matters to operators goes to
//! `tracing`.
//!
//! # `WWW-Authenticate`
//! HTTP requires a challenge on every 401 (RFC 9110, section 11.6.1), so the
//! two 401s carry `WWW-Authenticate: Signature realm="webhooks"` (from the
//! layer, with the scheme added: `Signature realm="webhooks",
//! scheme="stripe"`). Webhooks are authenticated by an HMAC signature over
//! the request, not by credentials a client could be asked for; `Signature`
//! is the auth-scheme name the HTTP Signatures drafts used for exactly that,
//! so the header tells a person or a tool reading the 401 what kind of
//! authentication failed and where (which provider scheme), without
//! inviting a retry with a password.

use std::{error::Error as StdError, fmt};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// Base of every problem `type` URI.
pub const PROBLEM_TYPE_BASE: &str = "https://hookgate.dev/problems/";

/// The `WWW-Authenticate` challenge of a 401 when no scheme is known.
pub const SIGNATURE_CHALLENGE: &str = "Signature realm=\"webhooks\"";

type BoxError = Box<dyn StdError + Send + Sync>;

/// Build an `application/problem+json` response.
pub(crate) fn problem_response(
    status: StatusCode,
    kind: &str,
    title: &str,
    detail: &str,
    retry_after: Option<u64>,
) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "type": format!("{PROBLEM_TYPE_BASE}{kind}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(secs) = retry_after {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    res
}

macro_rules! rejection {
    ($(#[$meta:meta])* $name:ident, $status:ident, $kind:literal, $title:literal) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub struct $name {
            detail: String,
            retry_after: Option<u64>,
            challenge: Option<HeaderValue>,
            source: Option<BoxError>,
        }

        impl $name {
            #[allow(dead_code)]
            pub(crate) fn new(detail: impl Into<String>) -> Self {
                Self { detail: detail.into(), retry_after: None, challenge: None, source: None }
            }

            /// Name the signature scheme in the 401's `WWW-Authenticate`.
            #[allow(dead_code)]
            pub(crate) fn with_challenge(mut self, scheme: &str) -> Self {
                self.challenge = HeaderValue::from_str(&format!(
                    "{SIGNATURE_CHALLENGE}, scheme=\"{scheme}\""
                ))
                .ok();
                self
            }

            #[allow(dead_code)]
            pub(crate) fn with_retry_after(mut self, secs: u64) -> Self {
                self.retry_after = Some(secs);
                self
            }

            #[allow(dead_code)]
            pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
                self.source = Some(source.into());
                self
            }

            /// The HTTP status of the response.
            #[must_use]
            pub fn status(&self) -> StatusCode {
                StatusCode::$status
            }

            /// The stable problem kind (the last segment of its `type` URI).
            #[must_use]
            pub fn kind(&self) -> &'static str {
                $kind
            }

            /// The problem's short title.
            #[must_use]
            pub fn title(&self) -> &'static str {
                $title
            }

            /// The short, human-readable detail sent in the response.
            #[must_use]
            pub fn detail(&self) -> &str {
                &self.detail
            }

            /// The `Retry-After` seconds sent with it, if any.
            #[must_use]
            pub fn retry_after(&self) -> Option<u64> {
                self.retry_after
            }

            /// The `application/problem+json` response (a 401 with its
            /// `WWW-Authenticate` challenge).
            #[must_use]
            pub fn into_response(self) -> Response<Full<Bytes>> {
                let mut res = problem_response(
                    StatusCode::$status, $kind, $title, &self.detail, self.retry_after,
                );
                if StatusCode::$status == StatusCode::UNAUTHORIZED {
                    let challenge = self
                        .challenge
                        .unwrap_or(HeaderValue::from_static(SIGNATURE_CHALLENGE));
                    res.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
                }
                res
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}: {}", $kind, self.detail)
            }
        }

        impl StdError for $name {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                self.source.as_deref().map(|e| e as &(dyn StdError + 'static))
            }
        }

        #[cfg(feature = "axum")]
        impl axum::response::IntoResponse for $name {
            fn into_response(self) -> axum::response::Response {
                $name::into_response(self).map(axum::body::Body::new)
            }
        }

        impl From<$name> for WebhookRejection {
            fn from(r: $name) -> Self {
                WebhookRejection::$name(r)
            }
        }
    };
}

rejection!(
    /// 403: the client address is outside the layer's
    /// [allow-list](crate::source).
    SourceNotAllowed, FORBIDDEN, "source_not_allowed", "Source not allowed"
);
rejection!(
    /// 400: a header the scheme needs is missing or malformed.
    MalformedWebhook, BAD_REQUEST, "malformed_webhook", "Malformed webhook"
);
rejection!(
    /// 400: the body could not be read (the client went away, bad framing).
    BodyReadFailed, BAD_REQUEST, "body_read_failed", "Body could not be read"
);
rejection!(
    /// 401: the signed timestamp is outside the tolerance, either way.
    TimestampOutOfTolerance, UNAUTHORIZED, "timestamp_out_of_tolerance", "Timestamp out of tolerance"
);
rejection!(
    /// 413: the body is larger than the layer's limit.
    PayloadTooLarge, PAYLOAD_TOO_LARGE, "payload_too_large", "Payload too large"
);
rejection!(
    /// 401: no signature matches any active secret.
    InvalidSignature, UNAUTHORIZED, "invalid_signature", "Invalid signature"
);
rejection!(
    /// 409: the same event is being handled by another request; retry after
    /// the `Retry-After` seconds (the rest of its lease).
    DuplicateInFlight, CONFLICT, "duplicate_in_flight", "Duplicate in flight"
);
rejection!(
    /// 422: the event id was seen before with a different body.
    ConflictingDuplicate, UNPROCESSABLE_ENTITY, "conflicting_duplicate", "Conflicting duplicate"
);
rejection!(
    /// 503: the dedup store could not be reached; retry after `Retry-After`.
    StoreUnavailable, SERVICE_UNAVAILABLE, "store_unavailable", "Dedup store unavailable"
);

/// Every way the layer can refuse a request.
#[derive(Debug)]
#[non_exhaustive]
pub enum WebhookRejection {
    /// See [`SourceNotAllowed`].
    SourceNotAllowed(SourceNotAllowed),
    /// See [`MalformedWebhook`].
    MalformedWebhook(MalformedWebhook),
    /// See [`BodyReadFailed`].
    BodyReadFailed(BodyReadFailed),
    /// See [`TimestampOutOfTolerance`].
    TimestampOutOfTolerance(TimestampOutOfTolerance),
    /// See [`PayloadTooLarge`].
    PayloadTooLarge(PayloadTooLarge),
    /// See [`InvalidSignature`].
    InvalidSignature(InvalidSignature),
    /// See [`DuplicateInFlight`].
    DuplicateInFlight(DuplicateInFlight),
    /// See [`ConflictingDuplicate`].
    ConflictingDuplicate(ConflictingDuplicate),
    /// See [`StoreUnavailable`].
    StoreUnavailable(StoreUnavailable),
}

macro_rules! each {
    ($self:expr, $r:ident => $e:expr) => {
        match $self {
            WebhookRejection::SourceNotAllowed($r) => $e,
            WebhookRejection::MalformedWebhook($r) => $e,
            WebhookRejection::BodyReadFailed($r) => $e,
            WebhookRejection::TimestampOutOfTolerance($r) => $e,
            WebhookRejection::PayloadTooLarge($r) => $e,
            WebhookRejection::InvalidSignature($r) => $e,
            WebhookRejection::DuplicateInFlight($r) => $e,
            WebhookRejection::ConflictingDuplicate($r) => $e,
            WebhookRejection::StoreUnavailable($r) => $e,
        }
    };
}

impl WebhookRejection {
    /// The HTTP status of the response.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        each!(self, r => r.status())
    }

    /// The stable problem kind.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        each!(self, r => r.kind())
    }

    /// The short detail sent in the response.
    #[must_use]
    pub fn detail(&self) -> &str {
        each!(self, r => r.detail())
    }

    /// The `application/problem+json` response.
    #[must_use]
    pub fn into_response(self) -> Response<Full<Bytes>> {
        each!(self, r => r.into_response())
    }
}

impl fmt::Display for WebhookRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        each!(self, r => fmt::Display::fmt(r, f))
    }
}

impl StdError for WebhookRejection {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        each!(self, r => r.source())
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for WebhookRejection {
    fn into_response(self) -> axum::response::Response {
        WebhookRejection::into_response(self).map(axum::body::Body::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn problem_body_has_stable_fields() {
        let r: WebhookRejection = DuplicateInFlight::new("event is being handled")
            .with_retry_after(7)
            .into();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(r.kind(), "duplicate_in_flight");
        let res = r.into_response();
        assert_eq!(res.headers()[header::RETRY_AFTER], "7");
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["type"],
            "https://hookgate.dev/problems/duplicate_in_flight"
        );
        assert_eq!(v["status"], 409);
        assert_eq!(v["title"], "Duplicate in flight");
        assert_eq!(v["detail"], "event is being handled");
        assert!(!res_has_challenge(
            DuplicateInFlight::new("x").into_response()
        ));
    }

    fn res_has_challenge(res: Response<Full<Bytes>>) -> bool {
        res.headers().contains_key(header::WWW_AUTHENTICATE)
    }

    #[test]
    fn every_401_carries_a_signature_challenge() {
        let res = InvalidSignature::new("no match").into_response();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            res.headers()[header::WWW_AUTHENTICATE],
            "Signature realm=\"webhooks\""
        );
        let res = TimestampOutOfTolerance::new("stale")
            .with_challenge("stripe")
            .into_response();
        assert_eq!(
            res.headers()[header::WWW_AUTHENTICATE],
            "Signature realm=\"webhooks\", scheme=\"stripe\""
        );
        let res = SourceNotAllowed::new("outside").into_response();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert!(!res_has_challenge(res));
    }
}
