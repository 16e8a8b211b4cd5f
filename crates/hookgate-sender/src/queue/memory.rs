//! In-memory queue (placeholder until the sender work lands).

/// In-memory queue for tests, the demo and single-process use.
#[derive(Debug, Default)]
pub struct MemoryQueue {}
