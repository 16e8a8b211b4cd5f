//! What an attempt's result means: delivered, retry, permanent failure, or gone.
//!
//! | result | class |
//! |---|---|
//! | 2xx | [`Class::Delivered`] |
//! | 408, 409, 425, 429, 5xx | [`Class::Retry`] |
//! | 410 Gone | [`Class::Gone`]: the endpoint is disabled and the delivery dead-lettered |
//! | other 4xx | [`Class::Permanent`] |
//! | 1xx, 3xx (redirects are never followed) | [`Class::Permanent`] |
//! | timeout, DNS failure, connection refused/reset | [`Class::Retry`] |
//! | destination refused by the SSRF guard | [`Class::Permanent`] |
//!
//! A 3xx is permanent because following it would let a receiver point the
//! sender anywhere (see [`ssrf`](crate::ssrf)); the fix is to configure the
//! final URL. [`Classifier::with_retry_on`] and [`Classifier::with_permanent_on`]
//! change the class of single statuses:
//!
//! ```
//! use hookgate_sender::outcome::{Class, Classifier};
//! let c = Classifier::default().with_retry_on(404).with_permanent_on(409);
//! assert_eq!(c.classify_status(404), Class::Retry);
//! assert_eq!(c.classify_status(409), Class::Permanent);
//! assert_eq!(c.classify_status(503), Class::Retry);
//! ```

/// The class of an attempt's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The receiver accepted the message.
    Delivered,
    /// Try again later (subject to the retry policy).
    Retry,
    /// Do not retry; dead-letter now.
    Permanent,
    /// `410 Gone`: disable the endpoint and dead-letter.
    Gone,
}

impl Class {
    /// A short lowercase label (`delivered`, `retry`, `permanent`, `gone`), as used in metrics.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retry => "retry",
            Self::Permanent => "permanent",
            Self::Gone => "gone",
        }
    }
}

/// Maps HTTP statuses to [`Class`]es; see the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classifier {
    retry_on: Vec<u16>,
    permanent_on: Vec<u16>,
}

impl Classifier {
    /// Retry on `status` (e.g. a 404 while a receiver is being deployed).
    #[must_use]
    pub fn with_retry_on(mut self, status: u16) -> Self {
        self.permanent_on.retain(|s| *s != status);
        self.retry_on.push(status);
        self
    }

    /// Never retry on `status`.
    #[must_use]
    pub fn with_permanent_on(mut self, status: u16) -> Self {
        self.retry_on.retain(|s| *s != status);
        self.permanent_on.push(status);
        self
    }

    /// The class of a response with `status`.
    #[must_use]
    pub fn classify_status(&self, status: u16) -> Class {
        if self.retry_on.contains(&status) {
            return Class::Retry;
        }
        if self.permanent_on.contains(&status) {
            return Class::Permanent;
        }
        match status {
            200..=299 => Class::Delivered,
            410 => Class::Gone,
            408 | 409 | 425 | 429 | 500..=599 => Class::Retry,
            _ => Class::Permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_classes() {
        let c = Classifier::default();
        for s in [200, 201, 204, 299] {
            assert_eq!(c.classify_status(s), Class::Delivered, "{s}");
        }
        for s in [408, 409, 425, 429, 500, 502, 503, 504, 599] {
            assert_eq!(c.classify_status(s), Class::Retry, "{s}");
        }
        for s in [100, 301, 302, 307, 400, 401, 403, 404, 413, 422, 600] {
            assert_eq!(c.classify_status(s), Class::Permanent, "{s}");
        }
        assert_eq!(c.classify_status(410), Class::Gone);
    }

    #[test]
    fn overrides_last_one_wins() {
        let c = Classifier::default()
            .with_permanent_on(503)
            .with_retry_on(503);
        assert_eq!(c.classify_status(503), Class::Retry);
        let c = Classifier::default().with_retry_on(410);
        assert_eq!(c.classify_status(410), Class::Retry);
    }
}
