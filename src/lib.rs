//! hookgate: webhooks that are safe to receive and reliable to send.
//!
//! This facade re-exports the workspace crates:
//! - [`core`]: signature schemes (sign/verify), no I/O;
//! - [`tower`] (feature `tower`, default): the verifying, deduplicating layer;
//! - [`sender`] (feature `sender`, default): queue, signed delivery, retries, DLQ.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use hookgate_core as core;
pub use hookgate_core::{Scheme, Secret, Signer, Verified, Verifier, VerifyError};

#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use hookgate_tower as tower;

#[cfg(feature = "sender")]
#[cfg_attr(docsrs, doc(cfg(feature = "sender")))]
pub use hookgate_sender as sender;

/// The README's Rust examples, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
