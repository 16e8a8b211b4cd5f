//! Placeholder.

/// Postgres queue (placeholder until the Postgres backend lands).
#[derive(Debug)]
pub struct PostgresQueue {}
