//! Typed errors for verification and configuration.

/// Why a webhook failed verification.
///
/// Variants tell apart the failures a receiver must answer differently
/// (malformed → 400, stale → 401, forged → 401). Messages name the header and
/// the problem, never secret material or the expected MAC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A header the scheme requires is absent.
    #[error("missing header `{name}`")]
    MissingHeader {
        /// The (canonical) header name.
        name: &'static str,
    },
    /// A header is present but cannot be parsed.
    #[error("malformed header `{name}`: {reason}")]
    MalformedHeader {
        /// The header name as read.
        name: &'static str,
        /// What is wrong with it.
        reason: Malformed,
    },
    /// The timestamp is older than the tolerance allows.
    #[error("timestamp {timestamp} is too old: now is {now}, tolerance {tolerance}s")]
    TimestampTooOld {
        /// Signed timestamp (Unix seconds).
        timestamp: i64,
        /// The verifier's clock (Unix seconds).
        now: i64,
        /// Allowed skew in seconds.
        tolerance: u64,
    },
    /// The timestamp is further in the future than the tolerance allows.
    #[error("timestamp {timestamp} is in the future: now is {now}, tolerance {tolerance}s")]
    TimestampInFuture {
        /// Signed timestamp (Unix seconds).
        timestamp: i64,
        /// The verifier's clock (Unix seconds).
        now: i64,
        /// Allowed skew in seconds.
        tolerance: u64,
    },
    /// Every header is well formed, but no signature matches any active secret.
    #[error("no signature matches any active secret")]
    NoMatchingSignature,
}

impl VerifyError {
    /// A stable, machine-readable name for the failure class:
    /// `malformed_webhook`, `timestamp_out_of_tolerance` or `invalid_signature`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingHeader { .. } | Self::MalformedHeader { .. } => "malformed_webhook",
            Self::TimestampTooOld { .. } | Self::TimestampInFuture { .. } => {
                "timestamp_out_of_tolerance"
            }
            Self::NoMatchingSignature => "invalid_signature",
        }
    }
}

/// What is wrong with a malformed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// Not valid UTF-8 / visible ASCII.
    #[error("not valid text")]
    NotText,
    /// The value is empty.
    #[error("empty value")]
    Empty,
    /// The value is longer than allowed.
    #[error("value longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// The timestamp is not plain decimal seconds.
    #[error("timestamp is not plain decimal seconds")]
    BadTimestamp,
    /// The header does not follow the scheme's syntax.
    #[error("unexpected syntax")]
    BadSyntax,
    /// A signature is not valid base64 / hex.
    #[error("signature is not valid {encoding}")]
    BadEncoding {
        /// `base64` or `hex`.
        encoding: &'static str,
    },
    /// A signature decodes to the wrong number of bytes (HMAC-SHA256 is 32,
    /// ed25519 64).
    #[error("signature has {len} bytes, not the length the scheme's algorithm produces")]
    WrongLength {
        /// Decoded length.
        len: usize,
    },
    /// The header carries no signature of a version this scheme verifies.
    #[error("no signature of a supported version")]
    NoSupportedSignature,
    /// More signatures than the verifier examines.
    #[error("more than {max} signatures")]
    TooManySignatures {
        /// The limit.
        max: usize,
    },
}

/// A verifier or signer could not be built from its settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A secret is empty.
    #[error("secret is empty")]
    EmptySecret,
    /// A Standard Webhooks secret is not `whsec_` + base64.
    #[error("secret is not valid base64 (expected `whsec_<base64>`)")]
    InvalidSecretEncoding,
    /// No secret was given.
    #[error("at least one secret is required")]
    NoSecrets,
    /// An unknown scheme name.
    #[error("unknown scheme `{0}` (expected one of: standard, stripe, github, slack, shopify, discord; custom schemes are built with `Scheme::custom`)")]
    UnknownScheme(String),
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
    /// An ed25519 public key is not a valid (or is a weak) curve point.
    #[error("not a valid ed25519 public key")]
    InvalidPublicKey,
    /// A key of the wrong kind for the scheme (an HMAC secret for Discord,
    /// an ed25519 key for an HMAC-only scheme).
    #[error("scheme `{scheme}` takes {expected}")]
    WrongKeyKind {
        /// The scheme's name.
        scheme: &'static str,
        /// What it takes.
        expected: &'static str,
    },
    /// A signer was given only ed25519 public keys, which cannot sign.
    #[error("a public key cannot sign: give the signing key (whsk_...)")]
    PublicKeyCannotSign,
    /// A custom scheme's definition is invalid.
    #[error("invalid custom scheme: {field}: {reason}")]
    InvalidCustomScheme {
        /// The setting at fault (`signature_header`, `signed`, ...).
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A custom scheme file is not valid TOML or has an unknown key.
    #[error("invalid custom scheme file{}: {message}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    InvalidCustomSchemeFile {
        /// The line at fault, when known.
        line: Option<usize>,
        /// The parser's message (never the line's text).
        message: String,
    },
}
