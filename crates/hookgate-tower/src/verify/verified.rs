//! [`VerifiedWebhook`]: what the layer tells the handler.

use hookgate_core::Scheme;

/// A webhook that passed verification, put into the request extensions
/// before the handler runs.
///
/// ```
/// # use http::Request;
/// # use http_body_util::Full;
/// # use bytes::Bytes;
/// use hookgate_tower::VerifiedWebhook;
///
/// async fn handler(req: Request<Full<Bytes>>) {
///     if let Some(webhook) = req.extensions().get::<VerifiedWebhook>() {
///         println!("{} event {:?}", webhook.scheme, webhook.id);
///     }
/// }
/// # let _ = handler;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedWebhook {
    /// The scheme it was verified with.
    pub scheme: Scheme,
    /// The event id (for GitHub and Shopify the unsigned id header, reported
    /// as received; for Slack none unless configured in the verifier).
    pub id: Option<String>,
    /// The signed timestamp (Unix seconds), for schemes that sign one.
    pub timestamp: Option<i64>,
    /// Index, in the verifier's secrets, of the one whose signature matched.
    pub key_index: usize,
    /// The dedup key: `prefix:scheme:id` when the id is signed, otherwise
    /// `prefix:scheme:sha256:<hex body digest>`; `%` and `:` in the prefix
    /// and the id are percent-escaped (`%25`, `%3A`).
    pub dedup_key: String,
    /// `false` when the store was unreachable and fail-open let the request
    /// through without a claim (the handler may see this event again).
    pub deduplicated: bool,
}
