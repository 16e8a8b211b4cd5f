//! Receiving webhooks safely: a Tower layer that verifies, rejects stale
//! timestamps and deduplicates before your handler runs.
//!
//! ```
//! use axum::{routing::post, Router};
//! use hookgate_core::{Scheme, Verifier};
//! use hookgate_tower::{MemoryStore, VerifyWebhookLayer};
//!
//! let verifier = Verifier::from_secret_strings(Scheme::GitHub, ["It's a Secret to Everybody"])?;
//! let app: Router = Router::new()
//!     .route("/github", post(|| async { "ok" }))
//!     .layer(VerifyWebhookLayer::new(verifier).with_store(MemoryStore::default()));
//! # let _ = app;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! See [`verify`] for the steps, status codes and metrics, [`rejection`] for
//! the problem documents, [`store`] for the dedup stores, and [`source`] for
//! the source-address allow-list.
//!
//! # Limits
//! - GitHub and Shopify sign no timestamp, so their replay protection lasts
//!   as long as the done record is kept (the layer's retention, 72 h by
//!   default); a captured request replayed later runs the handler again.
//! - The [`MemoryStore`] protects one process and forgets on restart; use
//!   Redis or Postgres for replicas and restarts.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod extract;
pub mod rejection;
pub mod source;
pub mod store;
pub mod verify;

pub use body::{BoxError, ResponseBody};
pub use rejection::WebhookRejection;
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "redis")]
pub use store::RedisStore;
pub use store::{DedupStore, MemoryStore};
pub use verify::{ResponseFuture, VerifiedWebhook, VerifyWebhook, VerifyWebhookLayer};
