//! Placeholder.

/// Redis queue (placeholder until the Redis backend lands).
#[derive(Debug)]
pub struct RedisQueue {}
