//! Messages: what is sent.

use bytes::Bytes;

/// The longest message id accepted, in bytes. The id travels in a header on
/// every attempt (`webhook-id`, for instance) and is part of queue keys, so
/// it is bounded; 256 is far above any provider's ids (Svix and Stripe use
/// about 30 characters) and far below common header size limits (8 KiB).
pub const MAX_MESSAGE_ID_LEN: usize = 256;

/// A message id cannot be sent. The id itself is not repeated (it may be
/// long); the error says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The id is empty.
    #[error("message id is empty")]
    EmptyId,
    /// The id is longer than [`MAX_MESSAGE_ID_LEN`] bytes.
    #[error("message id is {len} bytes long; at most {MAX_MESSAGE_ID_LEN} are allowed")]
    IdTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The id has a character that is not visible ASCII (`!` to `~`): white
    /// space, a control character or non-ASCII cannot be a header value.
    #[error("message id has a character that is not visible ASCII at byte {index}")]
    InvalidIdChar {
        /// Byte offset of the first such character.
        index: usize,
    },
}

/// Check that `id` can be sent as a message id: 1 to [`MAX_MESSAGE_ID_LEN`]
/// bytes of visible ASCII (`!` to `~`), so it is a valid HTTP header value
/// in every scheme.
///
/// # Errors
/// What is wrong with it.
pub fn validate_message_id(id: &str) -> Result<(), MessageError> {
    if id.is_empty() {
        return Err(MessageError::EmptyId);
    }
    if id.len() > MAX_MESSAGE_ID_LEN {
        return Err(MessageError::IdTooLong { len: id.len() });
    }
    match id.bytes().position(|b| !b.is_ascii_graphic()) {
        Some(index) => Err(MessageError::InvalidIdChar { index }),
        None => Ok(()),
    }
}

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

    /// Use this id instead of a generated one. Not checked here:
    /// [`Sender::enqueue`](crate::Sender::enqueue) refuses an invalid id;
    /// [`try_with_id`](Self::try_with_id) refuses it at once.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Use this id instead of a generated one, if it can be sent (see
    /// [`validate_message_id`]).
    ///
    /// ```
    /// use hookgate_sender::{Message, MessageError};
    /// assert!(Message::new("t", "{}").try_with_id("evt_42").is_ok());
    /// assert_eq!(
    ///     Message::new("t", "{}").try_with_id("evt 42").unwrap_err(),
    ///     MessageError::InvalidIdChar { index: 3 }
    /// );
    /// ```
    ///
    /// # Errors
    /// The id is empty, too long, or not visible ASCII.
    pub fn try_with_id(self, id: impl Into<String>) -> Result<Self, MessageError> {
        let id = id.into();
        validate_message_id(&id)?;
        Ok(self.with_id(id))
    }

    /// Check the message (its id, see [`validate_message_id`]).
    ///
    /// # Errors
    /// The id cannot be sent.
    pub fn validate(&self) -> Result<(), MessageError> {
        validate_message_id(&self.id)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_visible_ascii_and_bounded() {
        for ok in [
            "m",
            "msg_2J7yWfQvX9",
            "evt_1.2-3:4/5@x~!",
            &"x".repeat(MAX_MESSAGE_ID_LEN),
        ] {
            assert_eq!(validate_message_id(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_message_id(""), Err(MessageError::EmptyId));
        assert_eq!(
            validate_message_id(&"x".repeat(MAX_MESSAGE_ID_LEN + 1)),
            Err(MessageError::IdTooLong {
                len: MAX_MESSAGE_ID_LEN + 1
            })
        );
        for (bad, index) in [
            ("a b", 1),
            ("tab\t", 3),
            ("nl\n", 2),
            ("\0", 0),
            ("del\u{7f}", 3),
            ("caf\u{e9}", 3),
        ] {
            assert_eq!(
                validate_message_id(bad),
                Err(MessageError::InvalidIdChar { index }),
                "{bad:?}"
            );
        }
        // Every generated id passes, and so every valid id is a header value.
        for _ in 0..100 {
            let id = new_message_id();
            assert_eq!(validate_message_id(&id), Ok(()));
            assert!(http::HeaderValue::from_str(&id).is_ok());
        }
    }
}
