//! In-process store (placeholder until the store work lands).
use super::{BoxFuture, Claim, ClaimToken, DedupStore, Digest, DoneRecord, Result};
use std::time::Duration;

/// A bounded, expiring in-memory store for one process and for tests.
#[derive(Debug, Default)]
pub struct MemoryStore {}

impl DedupStore for MemoryStore {
    fn claim<'a>(
        &'a self,
        _key: &'a str,
        _digest: &'a Digest,
        _lease: Duration,
    ) -> BoxFuture<'a, Result<Claim>> {
        unimplemented!()
    }
    fn complete<'a>(
        &'a self,
        _key: &'a str,
        _token: &'a ClaimToken,
        _record: DoneRecord,
        _retention: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        unimplemented!()
    }
    fn release<'a>(&'a self, _key: &'a str, _token: &'a ClaimToken) -> BoxFuture<'a, Result<bool>> {
        unimplemented!()
    }
}
