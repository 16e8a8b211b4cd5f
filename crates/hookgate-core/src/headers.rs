//! Read-only access to request headers, independent of any HTTP crate.

/// Something headers can be looked up in, by case-insensitive name.
///
/// Implemented for `http::HeaderMap` (feature `http`, on by default) and for
/// slices and vectors of `(name, value)` pairs, so the core needs no HTTP
/// stack:
///
/// ```
/// use hookgate_core::Headers;
/// let pairs = [("Webhook-Id", "msg_1")];
/// assert_eq!(pairs[..].header("webhook-id"), Some(&b"msg_1"[..]));
/// ```
pub trait Headers {
    /// The first value of header `name` (compared case-insensitively).
    fn header(&self, name: &str) -> Option<&[u8]>;
}

impl<K: AsRef<str>, V: AsRef<[u8]>> Headers for [(K, V)] {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<[u8]>> Headers for Vec<(K, V)> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.as_slice().header(name)
    }
}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl Headers for http::HeaderMap {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(http::HeaderValue::as_bytes)
    }
}

impl<H: Headers + ?Sized> Headers for &H {
    fn header(&self, name: &str) -> Option<&[u8]> {
        (**self).header(name)
    }
}
