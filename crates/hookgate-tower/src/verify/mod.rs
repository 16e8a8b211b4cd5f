//! The verifying, deduplicating middleware: [`VerifyWebhookLayer`],
//! [`VerifyWebhook`], [`ResponseFuture`].
//!
//! Each request goes through these steps, cheapest rejection first:
//!
//! 0. with an [allow-list](VerifyWebhookLayer::with_allowed_sources), the
//!    client address is in it, else **403** `source_not_allowed` (see
//!    [`crate::source`] for the peer address, trusted proxies and
//!    `X-Forwarded-For`);
//! 1. the scheme's headers are present and well formed, else **400**
//!    `malformed_webhook`;
//! 2. the signed timestamp is within tolerance, else **401**
//!    `timestamp_out_of_tolerance`;
//! 3. the body is read up to the limit (a `Content-Length` above it is
//!    refused before reading; a chunked body stops being read at the limit),
//!    else **413** `payload_too_large`. The frames are copied into one
//!    buffer that grows as bytes arrive (toward a declared `Content-Length`,
//!    never past the limit), so a request costs at most about the limit in
//!    memory however it is framed, and only what it actually sent. The limit is the only one: the `extract::Webhook` extractor reads
//!    the buffered body without axum's 2 MiB `DefaultBodyLimit` (axum's own
//!    `Bytes`/`String` extractors still apply it: behind the layer, use
//!    `Webhook`, or add `DefaultBodyLimit::disable()` to the route);
//! 4. some signature matches some active secret, else **401**
//!    `invalid_signature` (both 401s carry
//!    `WWW-Authenticate: Signature realm="webhooks", scheme="<scheme>"`);
//! 5. the event is claimed in the [`DedupStore`](crate::DedupStore) under
//!    `prefix:scheme:id` (or, when the scheme does not sign its id — GitHub,
//!    Shopify, Slack — under `prefix:scheme:sha256:<body digest>`, so a
//!    captured request replayed under a new id header is still caught):
//!    - **new**: the handler runs with the body restored and a
//!      [`VerifiedWebhook`] in the request extensions. While it runs, the
//!      layer renews the claim every third of the lease, so a slow but live
//!      handler keeps it (a lease only runs out when the process, or its
//!      path to the store, is gone for longer than the lease). What the
//!      [`StatusPolicy`] calls final ([`DefaultStatusPolicy`]: a 2xx, or a
//!      4xx other than 408/409/425/429) is stored as done for the retention
//!      period, with the response's content type and body (a body of known
//!      size up to 4 KiB; a larger or streamed one is replayed empty); a
//!      5xx, 408, 409, 425, 429, an error or a panic (answered 500)
//!      releases the claim so the sender's retry runs the handler again.
//!      Recording the outcome runs in a task of its own: once the handler
//!      has answered, a dropped request (client gone, outer timeout) still
//!      records it. If the request is dropped mid-handler the claim is
//!      released in the background; if the process dies the lease expires;
//!    - **done**: the handler is not called; the stored status, content type
//!      and body are answered with `Idempotent-Replayed: true`;
//!    - **in flight**: **409** `duplicate_in_flight` with `Retry-After` (the
//!      rest of the lease, rounded up, at least 1 s);
//!    - **same id, different body**: **422** `conflicting_duplicate`, logged
//!      at `warn`;
//! 6. the store cannot be reached: **503** `store_unavailable` with
//!    `Retry-After: 5` (fail closed), unless
//!    [`with_fail_open(true)`](VerifyWebhookLayer::with_fail_open), which
//!    runs the handler without deduplication and logs a warning. The store
//!    is **misconfigured** (a missing table, a key holding a value the
//!    store did not write: [`StoreErrorKind::Config`](crate::store::StoreErrorKind::Config)):
//!    **500** `store_misconfigured`, logged at `error`, never fail-open. If
//!    marking the event done (or releasing it) fails after the handler ran,
//!    that is logged and the handler's response is returned anyway.
//!
//! Dedup keys are `prefix:scheme:id` (or `prefix:scheme:sha256:<hex>`) with
//! `%` and `:` percent-escaped in the prefix and the id, so no two
//! different events, prefixes or digests share a key.
//!
//! # Limits
//! - GitHub and Shopify sign no timestamp: a captured request can be
//!   replayed for as long as its done record is kept (the
//!   [retention](VerifyWebhookLayer::with_retention), 72 h by default), and
//!   after that it runs the handler again. Keep the retention longer than
//!   any replay you must refuse, or check the event's own date in the
//!   handler.
//! - The [`MemoryStore`](crate::MemoryStore) protects one process and
//!   forgets everything on restart; replicas, and restarts, need Redis or
//!   Postgres.
//!
//! Rejections are `application/problem+json` ([`crate::rejection`]).
//!
//! # Bodies
//! The inner service receives `Request<http_body_util::Full<Bytes>>`: axum's
//! `Router` accepts it as is (`.layer(..)` or `.route_layer(..)`), and a
//! hyper `service_fn` can take it directly. Responses are
//! `Response<`[`ResponseBody<B>`](crate::ResponseBody)`>` around the
//! handler's own body `B`, which axum and hyper both serve.
//!
//! # Metrics
//! Through the [`metrics`](https://docs.rs/metrics) facade:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `hookgate_receiver_verifications_total` | counter | `scheme`, `result` (`ok` or a rejection kind of steps 0-4) |
//! | `hookgate_receiver_duplicates_total` | counter | `scheme`, `kind` (`replayed`, `in_flight`, `conflicting`) |
//! | `hookgate_receiver_store_errors_total` | counter | `scheme`, `op` (`claim`, `complete`, `release`, `renew`) |
//! | `hookgate_receiver_handled_total` | counter | `scheme`, `outcome` (`completed`, `released`, `error`, `panic`, `undeduplicated`) |
//! | `hookgate_receiver_handler_duration_seconds` | histogram | `scheme` |
//!
//! # Example
//! ```
//! use axum::{routing::post, Router};
//! use hookgate_core::{Scheme, Verifier};
//! use hookgate_tower::VerifyWebhookLayer;
//!
//! let verifier = Verifier::from_secret_strings(
//!     Scheme::StandardWebhooks,
//!     ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
//! )?;
//! let app: Router = Router::new()
//!     .route("/webhooks", post(|body: String| async move { body.len().to_string() }))
//!     .route_layer(VerifyWebhookLayer::new(verifier));
//! # let _ = app;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod future;
mod layer;
mod policy;
mod service;
mod verified;

pub use future::ResponseFuture;
pub use layer::{
    VerifyWebhookLayer, DEFAULT_BODY_LIMIT, DEFAULT_LEASE, DEFAULT_PREFIX, DEFAULT_RETENTION,
    STORE_RETRY_AFTER_SECS,
};
pub use policy::{DefaultStatusPolicy, StatusPolicy};
pub use service::VerifyWebhook;
pub use verified::VerifiedWebhook;
