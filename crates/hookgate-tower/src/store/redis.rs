//! Placeholder until the store work lands.

/// Placeholder.
#[derive(Debug)]
pub struct RedisStore {}
