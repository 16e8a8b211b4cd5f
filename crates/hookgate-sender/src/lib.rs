//! Sending webhooks reliably: durable queue, signed delivery, retries with
//! jitter, dead-letter queue and replay.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{sync::Arc, time::Duration};
//! use hookgate_core::Scheme;
//! use hookgate_sender::{Endpoint, MemoryQueue, Message, Queue, Sender, Worker};
//!
//! let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
//! let sender = Sender::new(queue.clone());
//! sender.add_endpoint(Endpoint::new("orders", "https://example.com/hook",
//!     Scheme::StandardWebhooks, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?).await?;
//! sender.enqueue("orders", Message::new("order.paid", r#"{"id":42}"#)).await?;
//!
//! let worker = Worker::builder(queue).build()?.spawn();
//! // ...
//! worker.shutdown(Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```
//!
//! - [`Sender`] stores endpoints and enqueues messages (returns once stored).
//! - [`Worker`] leases due deliveries and attempts them: signed afresh each
//!   time ([`delivery`]), classified ([`outcome`]), then one pure function
//!   ([`decide`]) chooses the next [`Transition`](queue::Transition) —
//!   delivered, retried with backoff and full jitter ([`retry`]), or
//!   dead-lettered when exhausted or permanent — which the queue applies in
//!   one fenced step.
//! - [`bulk`] replays or purges the dead letters that exist at the start,
//!   once each.
//! - [`maintenance`] runs the pruner and the rescuer under a leader lock.
//! - [`ssrf`] keeps deliveries out of private networks, on by default.
//! - [`shard`] spreads endpoints over several stores by a stable hash.
//! - [`redact`] masks credentials in URLs, DSNs and messages.
//! - [`queue`]: the storage contract and its backends.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod audit;
pub mod breaker;
pub mod bulk;
pub mod decide;
pub mod delivery;
mod endpoint;
pub mod lifecycle;
pub mod limiter;
pub mod maintenance;
mod message;
pub mod outcome;
pub mod queue;
pub mod redact;
pub mod retry;
pub mod seal;
mod sender;
pub mod shard;
pub mod ssrf;
pub mod state;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod tier;
pub mod worker;

pub use endpoint::{
    ClientIdentity, Endpoint, EndpointError, PreviousSecret, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
};
pub use message::{
    new_message_id, now_ms, validate_message_id, Message, MessageError, MAX_MESSAGE_ID_LEN,
};
pub use queue::{MemoryQueue, Queue};
pub use sender::{SendError, Sender};
pub use worker::{Worker, WorkerBuilder, WorkerHandle};
