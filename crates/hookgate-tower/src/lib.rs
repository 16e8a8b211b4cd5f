//! Receiving webhooks safely: a Tower layer that verifies, rejects stale
//! timestamps and deduplicates before your handler runs.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod store;

pub use store::{DedupStore, MemoryStore};
