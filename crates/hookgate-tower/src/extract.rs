//! The axum extractor [`Webhook`] (feature `axum`).
//!
//! ```
//! use axum::{routing::post, Router};
//! use hookgate_core::{Scheme, Verifier};
//! use hookgate_tower::{extract::Webhook, VerifyWebhookLayer};
//!
//! #[derive(serde::Deserialize)]
//! struct Event {
//!     r#type: String,
//! }
//!
//! async fn handler(webhook: Webhook) -> &'static str {
//!     match webhook.json::<Event>() {
//!         Ok(event) => println!("{:?} {}", webhook.verified.id, event.r#type),
//!         Err(_) => println!("{} raw bytes", webhook.body.len()),
//!     }
//!     "ok"
//! }
//!
//! let verifier = Verifier::from_secret_strings(Scheme::StandardWebhooks, ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])?;
//! let app: Router = Router::new()
//!     .route("/webhooks", post(handler))
//!     .route_layer(VerifyWebhookLayer::new(verifier));
//! # let _ = app;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use axum::{
    extract::{FromRequest, Request},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::StatusCode;
use serde::de::DeserializeOwned;

use crate::{rejection::problem_response, VerifiedWebhook};

/// A verified webhook: what the layer checked, and the raw body exactly as
/// received (it consumes the request body, so use it as the last extractor).
///
/// Fails with [`WebhookExtractRejection::MissingLayer`] (500) if the route is
/// not behind a [`VerifyWebhookLayer`](crate::VerifyWebhookLayer).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Webhook {
    /// What the layer verified.
    pub verified: VerifiedWebhook,
    /// The body, byte for byte as signed.
    pub body: Bytes,
}

impl Webhook {
    /// The body parsed as JSON into `T`.
    ///
    /// # Errors
    /// When the body is not JSON of that shape.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Why [`Webhook`] could not be extracted.
#[derive(Debug)]
#[non_exhaustive]
pub enum WebhookExtractRejection {
    /// No [`VerifiedWebhook`] in the request: the route is not behind the
    /// layer. A server bug, answered 500.
    MissingLayer,
    /// The (already buffered) body could not be read. Answered 500, so the
    /// layer releases the claim and the sender's retry is handled: a body
    /// that could not be read is never stored as the event's answer.
    Body(axum::Error),
}

impl WebhookExtractRejection {
    /// The HTTP status of the response.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingLayer => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Body(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl fmt::Display for WebhookExtractRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingLayer => f.write_str(
                "no verified webhook in the request: is the route behind VerifyWebhookLayer?",
            ),
            Self::Body(_) => f.write_str("the request body could not be read"),
        }
    }
}

impl std::error::Error for WebhookExtractRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::MissingLayer => None,
            Self::Body(e) => Some(e),
        }
    }
}

impl IntoResponse for WebhookExtractRejection {
    fn into_response(self) -> Response {
        let (kind, title) = match self {
            Self::MissingLayer => {
                tracing::error!("{self}");
                (
                    "missing_verify_layer",
                    "Webhook verification not configured",
                )
            }
            Self::Body(ref e) => {
                tracing::error!(error = %e, "{self}");
                ("body_read_failed", "Body could not be read")
            }
        };
        problem_response(self.status(), kind, title, &self.to_string(), None)
            .map(axum::body::Body::new)
    }
}

impl<S: Send + Sync> FromRequest<S> for Webhook {
    type Rejection = WebhookExtractRejection;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(verified) = req.extensions().get::<VerifiedWebhook>().cloned() else {
            return Err(WebhookExtractRejection::MissingLayer);
        };
        // The layer already read the body within its own limit and handed it
        // on in memory, so read it without axum's `DefaultBodyLimit` (2 MiB):
        // the user's limit is the only one. (`Bytes::from_request` would
        // apply the default underneath and refuse what the layer accepted.)
        let body = axum::body::to_bytes(req.into_body(), usize::MAX)
            .await
            .map_err(WebhookExtractRejection::Body)?;
        Ok(Self { verified, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_cannot_be_read_is_a_5xx_so_the_claim_is_released() {
        // A 4xx from the handler would be stored as the event's answer.
        let r = WebhookExtractRejection::Body(axum::Error::new("reset"));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(r.into_response().status(), 500);
        assert_eq!(
            WebhookExtractRejection::MissingLayer
                .into_response()
                .status(),
            500
        );
    }
}
