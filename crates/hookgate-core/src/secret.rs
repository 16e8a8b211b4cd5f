//! Signing secrets: redacted in `Debug`, zeroized on drop, never compared.

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{ConfigError, Scheme};

/// A webhook signing key.
///
/// `Secret` holds the raw HMAC key bytes. It is zeroized when dropped, prints
/// as `Secret(<redacted>)`, and deliberately has no `PartialEq`, `Display` or
/// serialization, so it cannot end up in logs or in a timing-dependent
/// comparison by accident.
///
/// How a secret *string* becomes key bytes depends on the provider; use
/// [`Secret::for_scheme`] (or [`Scheme::secret`]) to follow the provider's rule:
///
/// - Standard Webhooks: `whsec_<base64>`; the `whsec_` prefix is optional and
///   the rest is base64-decoded.
/// - Stripe, GitHub, Slack, Shopify: the string's UTF-8 bytes, as given
///   (Stripe's `whsec_...` is *not* decoded; the prefix is part of the key).
///
/// ```
/// use hookgate_core::{Scheme, Secret};
///
/// let standard = Secret::for_scheme(Scheme::StandardWebhooks, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
/// assert_eq!(standard.len(), 24);
/// let stripe = Secret::for_scheme(Scheme::Stripe, "whsec_test_secret")?;
/// assert_eq!(stripe.len(), "whsec_test_secret".len());
/// assert_eq!(format!("{stripe:?}"), "Secret(<redacted>)");
/// # Ok::<(), hookgate_core::ConfigError>(())
/// ```
pub struct Secret {
    key: Zeroizing<Vec<u8>>,
    /// HMAC-SHA256 keyed with `key`: the inner and outer padded key blocks
    /// already hashed, so each MAC starts from this state (a copy) instead
    /// of hashing two key blocks again. sha2's and hmac's `zeroize` features
    /// wipe these states (here and in every copy) when they are dropped.
    keyed: Hmac<Sha256>,
}

impl Secret {
    /// Use these bytes as the HMAC key.
    ///
    /// # Errors
    /// [`ConfigError::EmptySecret`] when `key` is empty.
    pub fn from_bytes(key: impl Into<Vec<u8>>) -> Result<Self, ConfigError> {
        let key = Zeroizing::new(key.into());
        if key.is_empty() {
            return Err(ConfigError::EmptySecret);
        }
        let keyed = keyed(&key);
        Ok(Self { key, keyed })
    }

    /// Parse a secret string the way `scheme`'s provider does.
    ///
    /// # Errors
    /// [`ConfigError::EmptySecret`] for an empty secret,
    /// [`ConfigError::InvalidSecretEncoding`] when a Standard Webhooks secret
    /// is not valid base64. The error never contains the secret.
    pub fn for_scheme(scheme: Scheme, secret: &str) -> Result<Self, ConfigError> {
        match scheme {
            Scheme::StandardWebhooks => {
                let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
                if encoded.is_empty() {
                    return Err(ConfigError::EmptySecret);
                }
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.as_bytes())
                    .map_err(|_| ConfigError::InvalidSecretEncoding)?;
                Self::from_bytes(decoded)
            }
            Scheme::Stripe | Scheme::GitHub | Scheme::Slack | Scheme::Shopify => {
                Self::from_bytes(secret.as_bytes().to_vec())
            }
        }
    }

    /// Length of the key in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.key.len()
    }

    /// Always `false`: an empty secret cannot be built.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.key.is_empty()
    }

    /// The raw key bytes.
    ///
    /// # Security
    /// Do not log or persist these bytes.
    #[must_use]
    pub fn expose_bytes(&self) -> &[u8] {
        &self.key
    }

    /// Render as a Standard Webhooks `whsec_<base64>` string (used by senders
    /// that generate secrets to hand to receivers).
    #[must_use]
    pub fn to_standard_string(&self) -> String {
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(&*self.key)
        )
    }

    /// A copy of the keyed HMAC state, ready for the signed bytes.
    pub(crate) fn hmac(&self) -> Hmac<Sha256> {
        self.keyed.clone()
    }
}

/// HMAC takes keys of any length (longer ones are hashed first).
fn keyed(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Self {
            key: Zeroizing::new(self.key.to_vec()),
            keyed: self.keyed.clone(),
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
