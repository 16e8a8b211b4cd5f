//! Messages: what is sent.

use bytes::Bytes;

/// Current Unix time in milliseconds.
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One webhook event. Its `id` is sent on every attempt (and replay), so the
/// receiver can deduplicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Unique message id (`msg_...` when generated).
    pub id: String,
    /// Event type, e.g. `order.paid`.
    pub event_type: String,
    /// The exact bytes sent as the request body.
    pub payload: Bytes,
    /// Creation time, Unix milliseconds (the retry policy's maximum age counts from here).
    pub created_at_ms: i64,
}

impl Message {
    /// A message with a fresh random id, created now.
    #[must_use]
    pub fn new(event_type: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            id: new_message_id(),
            event_type: event_type.into(),
            payload: payload.into(),
            created_at_ms: now_ms(),
        }
    }

    /// Use this id instead of a generated one.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }
}

/// A fresh message id: `msg_` followed by 26 random base-32 characters.
#[must_use]
pub fn new_message_id() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut n: u128 = rand::random();
    let mut s = String::with_capacity(30);
    s.push_str("msg_");
    for _ in 0..26 {
        s.push(ALPHABET[(n & 31) as usize] as char);
        n >>= 5;
    }
    s
}
