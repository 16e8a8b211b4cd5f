//! Signing an outgoing webhook exactly as the receiver verifies it.

use crate::{scheme::Tag, ConfigError, Scheme, Secret};

/// Signs webhooks in one scheme.
///
/// With several secrets (rotation), schemes whose header carries several
/// signatures (Standard Webhooks, Stripe, custom schemes with a separator)
/// get one per secret; the others are signed with the first secret. A
/// Standard Webhooks signer with a `whsk_` ed25519 signing key writes a
/// `v1a` signature, beside the `v1` ones of any `whsec_` secrets.
///
/// ```
/// use hookgate_core::{Scheme, Signer};
/// let signer = Signer::new(Scheme::GitHub, Scheme::GitHub.secret("It's a Secret to Everybody")?);
/// let headers = signer.sign("delivery-1", 0, b"Hello, World!");
/// assert!(headers.contains(&(
///     "X-Hub-Signature-256",
///     "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_string()
/// )));
/// # Ok::<(), hookgate_core::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Signer {
    scheme: Scheme,
    secrets: Vec<Secret>,
}

impl Signer {
    /// A signer with one secret.
    ///
    /// A key that cannot sign for `scheme` (an ed25519 public key, an HMAC
    /// secret for Discord) yields a header with no signature, which never
    /// verifies; [`with_secrets`](Self::with_secrets) refuses such keys.
    #[must_use]
    pub fn new(scheme: Scheme, secret: Secret) -> Self {
        Self {
            scheme,
            secrets: vec![secret],
        }
    }

    /// A signer with several secrets, newest first.
    ///
    /// # Errors
    /// [`ConfigError::NoSecrets`] when `secrets` is empty,
    /// [`ConfigError::PublicKeyCannotSign`] for an ed25519 public key,
    /// [`ConfigError::WrongKeyKind`] for a key `scheme` does not take.
    pub fn with_secrets(
        scheme: Scheme,
        secrets: impl IntoIterator<Item = Secret>,
    ) -> Result<Self, ConfigError> {
        let secrets: Vec<Secret> = secrets.into_iter().collect();
        if secrets.is_empty() {
            return Err(ConfigError::NoSecrets);
        }
        for secret in &secrets {
            crate::verify::check_key(scheme, secret)?;
            if !secret.can_sign() {
                return Err(ConfigError::PublicKeyCannotSign);
            }
        }
        Ok(Self { scheme, secrets })
    }

    /// The scheme.
    #[must_use]
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The headers to send with `body`, as `(name, value)` pairs.
    ///
    /// `id` goes into the scheme's id header where it has one (Stripe carries
    /// its id in the JSON body; Slack has none). `timestamp` is Unix seconds
    /// and is ignored by schemes that sign none.
    #[must_use]
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
        let ts = timestamp.to_string();
        let count = if self.scheme.multi_signature() {
            self.secrets.len()
        } else {
            1
        };
        let mut message = None;
        let tags: Vec<Tag> = self
            .secrets
            .iter()
            .filter_map(|s| self.scheme.sign_tag(s, id, &ts, body, &mut message))
            .take(count)
            .collect();
        self.scheme.headers(id, &ts, &tags)
    }
}
