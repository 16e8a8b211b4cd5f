//! Sending webhooks reliably: durable queue, signed delivery, retries with
//! jitter, dead-letter queue and replay.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod endpoint;
mod message;
pub mod queue;

pub use endpoint::{Endpoint, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};
pub use message::{new_message_id, now_ms, Message};
pub use queue::{MemoryQueue, Queue};
