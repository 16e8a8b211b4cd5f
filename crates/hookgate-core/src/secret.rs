//! Signing secrets: redacted in `Debug`, zeroized on drop, never compared.

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{ConfigError, Scheme};

/// A webhook signing key.
///
/// `Secret` holds the raw HMAC key bytes, or an ed25519 signing key
/// (`whsk_`), or an ed25519 public key (`whpk_`: verifies, cannot sign; see
/// [`kind`](Self::kind)). Key material is zeroized when dropped, prints
/// as `Secret(<redacted>)`, and deliberately has no `PartialEq`, `Display` or
/// serialization, so it cannot end up in logs or in a timing-dependent
/// comparison by accident.
///
/// How a secret *string* becomes key bytes depends on the provider; use
/// [`Secret::for_scheme`] (or [`Scheme::secret`]) to follow the provider's rule:
///
/// - Standard Webhooks: `whsec_<base64>`; the `whsec_` prefix is optional and
///   the rest is base64-decoded. `whsk_` / `whpk_` are ed25519 keys.
/// - Discord: the application's public key, 64 hex digits.
/// - Stripe, GitHub, Slack, Shopify, custom: the string's UTF-8 bytes, as given
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
    inner: Inner,
}

/// What a [`Secret`] holds: a shared HMAC key, or one half of an ed25519 key pair.
#[derive(Clone)]
enum Inner {
    Hmac {
        key: Zeroizing<Vec<u8>>,
        /// HMAC-SHA256 keyed with `key`: the inner and outer padded key blocks
        /// already hashed, so each MAC starts from this state (a copy) instead
        /// of hashing two key blocks again. sha2's and hmac's `zeroize` features
        /// wipe these states (here and in every copy) when they are dropped.
        keyed: Hmac<Sha256>,
    },
    /// An ed25519 signing key (it verifies too); ed25519-dalek zeroizes it on drop.
    Ed25519Signing(Box<ed25519_dalek::SigningKey>),
    /// An ed25519 public key: verifies, cannot sign. Not secret.
    Ed25519Public(ed25519_dalek::VerifyingKey),
}

/// Which kind of key a [`Secret`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyKind {
    /// A shared HMAC key (`whsec_...`, or a provider's secret string).
    Hmac,
    /// An ed25519 signing key (`whsk_...`): signs and verifies.
    Ed25519Signing,
    /// An ed25519 public key (`whpk_...`, Discord's application public key):
    /// verifies only.
    Ed25519Public,
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
        Ok(Self {
            inner: Inner::Hmac { key, keyed },
        })
    }

    /// An ed25519 signing key from its 32-byte seed (RFC 8032's private key).
    #[must_use]
    pub fn ed25519_signing_key(seed: [u8; 32]) -> Self {
        let seed = Zeroizing::new(seed);
        Self {
            inner: Inner::Ed25519Signing(Box::new(ed25519_dalek::SigningKey::from_bytes(&seed))),
        }
    }

    /// An ed25519 public (verifying) key from its 32-byte encoding.
    ///
    /// # Errors
    /// [`ConfigError::InvalidPublicKey`] when the bytes are not a valid
    /// curve point, or a weak (small-order) key that anyone could forge for.
    pub fn ed25519_public_key(bytes: [u8; 32]) -> Result<Self, ConfigError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| ConfigError::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(ConfigError::InvalidPublicKey);
        }
        Ok(Self {
            inner: Inner::Ed25519Public(key),
        })
    }

    /// Parse a secret string the way `scheme`'s provider does.
    ///
    /// - Standard Webhooks: `whsec_<base64>` (HMAC; the prefix is optional),
    ///   `whsk_<base64>` (ed25519 signing key: the 32-byte seed, or the
    ///   64-byte seed + public key form libsodium/PyNaCl print) or
    ///   `whpk_<base64>` (ed25519 public key, 32 bytes).
    /// - Discord: the application's public key as 64 hex digits (as the
    ///   developer portal shows it), or `whpk_` / `whsk_` as above.
    /// - Stripe, GitHub, Slack, Shopify and custom schemes: the string's
    ///   UTF-8 bytes as the HMAC key.
    ///
    /// # Errors
    /// [`ConfigError::EmptySecret`] for an empty secret,
    /// [`ConfigError::InvalidSecretEncoding`] when the encoded part is not
    /// valid base64 / hex or has the wrong length,
    /// [`ConfigError::InvalidPublicKey`] for a public key that is no valid
    /// point, [`ConfigError::WrongKeyKind`] for an HMAC secret given to an
    /// ed25519-only scheme. The error never contains the secret.
    pub fn for_scheme(scheme: Scheme, secret: &str) -> Result<Self, ConfigError> {
        if secret.is_empty() {
            return Err(ConfigError::EmptySecret);
        }
        match scheme {
            Scheme::StandardWebhooks => {
                if let Some(encoded) = secret.strip_prefix("whsk_") {
                    return Self::parse_whsk(encoded);
                }
                if let Some(encoded) = secret.strip_prefix("whpk_") {
                    return Self::parse_whpk(encoded);
                }
                let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
                Self::from_bytes(decode_b64(encoded)?.to_vec())
            }
            Scheme::Discord => {
                if let Some(encoded) = secret.strip_prefix("whsk_") {
                    return Self::parse_whsk(encoded);
                }
                if let Some(encoded) = secret.strip_prefix("whpk_") {
                    return Self::parse_whpk(encoded);
                }
                if secret.starts_with("whsec_") {
                    return Err(ConfigError::WrongKeyKind {
                        scheme: "discord",
                        expected: "an ed25519 public key (64 hex digits or whpk_...)",
                    });
                }
                let mut key = [0u8; 32];
                hex::decode_to_slice(secret.trim(), &mut key)
                    .map_err(|_| ConfigError::InvalidSecretEncoding)?;
                Self::ed25519_public_key(key)
            }
            Scheme::Stripe
            | Scheme::GitHub
            | Scheme::Slack
            | Scheme::Shopify
            | Scheme::Custom(_) => Self::from_bytes(secret.as_bytes().to_vec()),
        }
    }

    fn parse_whsk(encoded: &str) -> Result<Self, ConfigError> {
        let decoded = decode_b64(encoded)?;
        match decoded.len() {
            32 => {
                let mut seed = [0u8; 32];
                seed.copy_from_slice(&decoded);
                Ok(Self::ed25519_signing_key(seed))
            }
            // libsodium / PyNaCl's 64-byte form: seed, then the public key.
            64 => {
                let mut seed = [0u8; 32];
                seed.copy_from_slice(&decoded[..32]);
                let key = Self::ed25519_signing_key(seed);
                let public = key.public_key_bytes().unwrap_or_default();
                // Not secret-dependent timing that matters: both halves are
                // the caller's own key material, compared once at start-up.
                if public[..] != decoded[32..] {
                    return Err(ConfigError::InvalidSecretEncoding);
                }
                Ok(key)
            }
            _ => Err(ConfigError::InvalidSecretEncoding),
        }
    }

    fn parse_whpk(encoded: &str) -> Result<Self, ConfigError> {
        let decoded = decode_b64(encoded)?;
        let bytes: [u8; 32] = decoded[..]
            .try_into()
            .map_err(|_| ConfigError::InvalidSecretEncoding)?;
        Self::ed25519_public_key(bytes)
    }

    /// Which kind of key this is.
    #[must_use]
    pub fn kind(&self) -> KeyKind {
        match self.inner {
            Inner::Hmac { .. } => KeyKind::Hmac,
            Inner::Ed25519Signing(_) => KeyKind::Ed25519Signing,
            Inner::Ed25519Public(_) => KeyKind::Ed25519Public,
        }
    }

    /// Whether this key can sign (every kind but an ed25519 public key).
    #[must_use]
    pub fn can_sign(&self) -> bool {
        !matches!(self.inner, Inner::Ed25519Public(_))
    }

    /// Length of the key in bytes (32 for ed25519 keys).
    #[must_use]
    pub fn len(&self) -> usize {
        self.expose_bytes().len()
    }

    /// Always `false`: an empty secret cannot be built.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.expose_bytes().is_empty()
    }

    /// The raw key bytes: the HMAC key, the ed25519 seed, or the public key.
    ///
    /// # Security
    /// Do not log or persist these bytes.
    #[must_use]
    pub fn expose_bytes(&self) -> &[u8] {
        match &self.inner {
            Inner::Hmac { key, .. } => key,
            Inner::Ed25519Signing(key) => key.as_bytes(),
            Inner::Ed25519Public(key) => key.as_bytes(),
        }
    }

    /// The ed25519 public key (32 bytes) of an ed25519 key; `None` for HMAC.
    #[must_use]
    pub fn public_key_bytes(&self) -> Option<[u8; 32]> {
        self.verifying_key().map(|k| k.to_bytes())
    }

    /// Render as a Standard Webhooks string (used by senders that generate
    /// secrets to hand to receivers): `whsec_<base64>` for an HMAC key,
    /// `whsk_<base64 seed>` for an ed25519 signing key, `whpk_<base64>` for
    /// a public key. Give receivers [`public_key_string`](Self::public_key_string).
    #[must_use]
    pub fn to_standard_string(&self) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        match &self.inner {
            Inner::Hmac { key, .. } => format!("whsec_{}", b64(key)),
            Inner::Ed25519Signing(key) => format!("whsk_{}", b64(key.as_bytes())),
            Inner::Ed25519Public(key) => format!("whpk_{}", b64(key.as_bytes())),
        }
    }

    /// `whpk_<base64>`: the public key receivers verify `v1a` signatures
    /// with. `None` for an HMAC key.
    ///
    /// ```
    /// use hookgate_core::{Scheme, Secret};
    /// let sk = Secret::ed25519_signing_key([7; 32]);
    /// let pk = sk.public_key_string().unwrap();
    /// assert!(pk.starts_with("whpk_"));
    /// assert!(!Secret::for_scheme(Scheme::StandardWebhooks, &pk)?.can_sign());
    /// # Ok::<(), hookgate_core::ConfigError>(())
    /// ```
    #[must_use]
    pub fn public_key_string(&self) -> Option<String> {
        self.public_key_bytes().map(|k| {
            format!(
                "whpk_{}",
                base64::engine::general_purpose::STANDARD.encode(k)
            )
        })
    }

    /// A copy of the keyed HMAC-SHA256 state, ready for the signed bytes;
    /// `None` for ed25519 keys.
    pub(crate) fn hmac(&self) -> Option<Hmac<Sha256>> {
        match &self.inner {
            Inner::Hmac { keyed, .. } => Some(keyed.clone()),
            _ => None,
        }
    }

    /// The HMAC key bytes; `None` for ed25519 keys.
    pub(crate) fn hmac_key(&self) -> Option<&[u8]> {
        match &self.inner {
            Inner::Hmac { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The ed25519 signing key, if this is one.
    pub(crate) fn signing_key(&self) -> Option<&ed25519_dalek::SigningKey> {
        match &self.inner {
            Inner::Ed25519Signing(key) => Some(key),
            _ => None,
        }
    }

    /// The ed25519 verifying key of either ed25519 kind.
    pub(crate) fn verifying_key(&self) -> Option<ed25519_dalek::VerifyingKey> {
        match &self.inner {
            Inner::Hmac { .. } => None,
            Inner::Ed25519Signing(key) => Some(key.verifying_key()),
            Inner::Ed25519Public(key) => Some(*key),
        }
    }
}

/// Base64 (standard alphabet, padded) into zeroized bytes.
fn decode_b64(encoded: &str) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    if encoded.is_empty() {
        return Err(ConfigError::EmptySecret);
    }
    base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| ConfigError::InvalidSecretEncoding)
}

/// HMAC takes keys of any length (longer ones are hashed first).
fn keyed(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
