//! Verifying a received webhook.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{
    scheme::{self, Parsed},
    ConfigError, Headers, Scheme, Secret, VerifyError,
};

/// Default timestamp tolerance: 5 minutes either way.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
/// Default bound on how many signatures one header may carry.
pub const DEFAULT_MAX_SIGNATURES: usize = 16;

/// Current Unix time in seconds.
#[must_use]
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Where the event id comes from, when the scheme's default is not wanted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IdSource {
    /// The scheme's own: the id header, or Stripe's and Discord's JSON body
    /// `id`; none for Slack.
    #[default]
    Scheme,
    /// The value of this request header (for example Slack's `X-Slack-Retry-Num`-free
    /// custom id header). Not covered by the signature.
    Header(String),
    /// This top-level string field of a JSON body (for example Slack's
    /// `event_id`). Covered by the signature, since the body is.
    JsonField(String),
}

/// A webhook that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The scheme it was verified with.
    pub scheme: Scheme,
    /// The event id, when the scheme (or [`IdSource`]) provides one.
    pub id: Option<String>,
    /// The signed timestamp (Unix seconds), for schemes that sign one.
    pub timestamp: Option<i64>,
    /// Index, in the verifier's list, of the secret whose signature matched.
    pub key_index: usize,
}

/// Headers that passed the syntax check, ready for the timestamp check and
/// the MAC. Produced by [`Verifier::parse_headers`]; lets a server reject a
/// malformed or stale request before reading its body.
#[derive(Debug, Clone)]
pub struct ParsedHeaders {
    inner: Parsed,
    /// `None`: the scheme's own id (`inner.id`); `Some`: the one [`IdSource`] chose.
    id_override: Option<Option<String>>,
}

impl ParsedHeaders {
    /// The signed timestamp, for schemes that sign one.
    #[must_use]
    pub fn timestamp(&self) -> Option<i64> {
        self.inner.timestamp.as_ref().map(|t| t.value)
    }

    /// The id read from the headers (the scheme's id header, or the
    /// [`IdSource::Header`] one), if any. Stripe's id is only known after the
    /// body is verified.
    #[must_use]
    pub fn header_id(&self) -> Option<&str> {
        match &self.id_override {
            Some(id) => id.as_deref(),
            None => self.inner.id.as_deref(),
        }
    }

    /// How many signatures the header carried (of the verified version).
    #[must_use]
    pub fn signature_count(&self) -> usize {
        self.inner.signatures.len()
    }

    fn into_header_id(self) -> Option<String> {
        match self.id_override {
            Some(id) => id,
            None => self.inner.id,
        }
    }
}

/// Headers whose timestamp passed [`Verifier::check_timestamp`]: the only
/// input [`Verifier::verify_parsed`] takes, so the MAC path cannot skip the
/// timestamp check by accident.
///
/// Use it with the verifier that checked it (another verifier's tolerance
/// was not applied).
#[derive(Debug, Clone)]
pub struct CheckedHeaders {
    parsed: ParsedHeaders,
}

impl CheckedHeaders {
    /// The parsed headers (timestamp, id, signature count).
    #[must_use]
    pub fn parsed(&self) -> &ParsedHeaders {
        &self.parsed
    }
}

/// Verifies webhooks of one scheme against one or more active secrets.
///
/// ```
/// use hookgate_core::{Scheme, Signer, Verifier};
///
/// let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// let body = br#"{"type":"order.paid"}"#;
/// let signer = Signer::new(Scheme::StandardWebhooks, Scheme::StandardWebhooks.secret(secret)?);
/// let headers = signer.sign("msg_1", 1_700_000_000, body);
///
/// let verifier = Verifier::new(Scheme::StandardWebhooks, [Scheme::StandardWebhooks.secret(secret)?])?;
/// let ok = verifier.verify_at(&headers, body, 1_700_000_010)?;
/// assert_eq!(ok.id.as_deref(), Some("msg_1"));
///
/// // Ten minutes later the same request is stale.
/// assert!(verifier.verify_at(&headers, body, 1_700_000_600).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Security
/// MACs are compared in constant time on decoded bytes. The timestamp is
/// checked before any MAC is computed, and at most
/// [`max_signatures`](Self::with_max_signatures) signatures are examined.
#[derive(Debug, Clone)]
pub struct Verifier {
    scheme: Scheme,
    secrets: Vec<Secret>,
    tolerance: Duration,
    max_signatures: usize,
    id_source: IdSource,
}

impl Verifier {
    /// A verifier for `scheme` accepting a signature by any of `secrets`.
    ///
    /// # Errors
    /// [`ConfigError::NoSecrets`] when `secrets` is empty,
    /// [`ConfigError::WrongKeyKind`] for a key `scheme` does not take (see
    /// [`Scheme::accepts`]).
    pub fn new(
        scheme: Scheme,
        secrets: impl IntoIterator<Item = Secret>,
    ) -> Result<Self, ConfigError> {
        let secrets: Vec<Secret> = secrets.into_iter().collect();
        if secrets.is_empty() {
            return Err(ConfigError::NoSecrets);
        }
        for secret in &secrets {
            check_key(scheme, secret)?;
        }
        Ok(Self {
            scheme,
            secrets,
            tolerance: DEFAULT_TOLERANCE,
            max_signatures: DEFAULT_MAX_SIGNATURES,
            id_source: IdSource::Scheme,
        })
    }

    /// Parse each secret string the way `scheme`'s provider does, then [`new`](Self::new).
    ///
    /// # Errors
    /// An invalid secret, or none.
    pub fn from_secret_strings<S: AsRef<str>>(
        scheme: Scheme,
        secrets: impl IntoIterator<Item = S>,
    ) -> Result<Self, ConfigError> {
        let secrets = secrets
            .into_iter()
            .map(|s| scheme.secret(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(scheme, secrets)
    }

    /// Accept timestamps at most this far from now, in either direction
    /// (default 300 s). Whole seconds; sub-second parts are ignored.
    #[must_use]
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Reject headers carrying more than `max` signatures (default 16, at least 1).
    #[must_use]
    pub fn with_max_signatures(mut self, max: usize) -> Self {
        self.max_signatures = max.max(1);
        self
    }

    /// Take the event id from somewhere other than the scheme's default.
    #[must_use]
    pub fn with_id_source(mut self, source: IdSource) -> Self {
        self.id_source = source;
        self
    }

    /// The scheme.
    #[must_use]
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The timestamp tolerance.
    #[must_use]
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// Whether the event id this verifier reports is covered by the signature.
    #[must_use]
    pub fn id_is_signed(&self) -> bool {
        match self.id_source {
            IdSource::Scheme => self.scheme.id_is_signed(),
            IdSource::Header(_) => false,
            IdSource::JsonField(_) => true,
        }
    }

    /// Step 1: the scheme's headers are present and well formed.
    ///
    /// # Errors
    /// [`VerifyError::MissingHeader`] or [`VerifyError::MalformedHeader`].
    pub fn parse_headers(
        &self,
        headers: &(impl Headers + ?Sized),
    ) -> Result<ParsedHeaders, VerifyError> {
        let inner = self.scheme.parse(headers, self.max_signatures)?;
        let id_override = match &self.id_source {
            IdSource::Scheme => None,
            IdSource::Header(name) => Some(match headers.header(name) {
                Some(raw) => Some(
                    std::str::from_utf8(raw)
                        .ok()
                        .filter(|s| {
                            !s.is_empty()
                                && s.len() <= scheme::MAX_ID_LEN
                                && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
                        })
                        .ok_or(VerifyError::MalformedHeader {
                            name: "id",
                            reason: crate::Malformed::NotText,
                        })?
                        .to_owned(),
                ),
                None => None,
            }),
            IdSource::JsonField(_) => Some(None),
        };
        Ok(ParsedHeaders { inner, id_override })
    }

    /// Step 2: the signed timestamp is within tolerance of `now` (Unix seconds).
    /// Schemes without a timestamp always pass.
    ///
    /// Returns the [`CheckedHeaders`] that step 3,
    /// [`verify_parsed`](Self::verify_parsed), requires.
    ///
    /// # Errors
    /// [`VerifyError::TimestampTooOld`] or [`VerifyError::TimestampInFuture`].
    pub fn check_timestamp(
        &self,
        parsed: ParsedHeaders,
        now: i64,
    ) -> Result<CheckedHeaders, VerifyError> {
        self.check_timestamp_ref(&parsed, now)?;
        Ok(CheckedHeaders { parsed })
    }

    fn check_timestamp_ref(&self, parsed: &ParsedHeaders, now: i64) -> Result<(), VerifyError> {
        let Some(timestamp) = parsed.timestamp() else {
            return Ok(());
        };
        let tolerance = self.tolerance.as_secs();
        let tol = i64::try_from(tolerance).unwrap_or(i64::MAX);
        if timestamp < now.saturating_sub(tol) {
            return Err(VerifyError::TimestampTooOld {
                timestamp,
                now,
                tolerance,
            });
        }
        if timestamp > now.saturating_add(tol) {
            return Err(VerifyError::TimestampInFuture {
                timestamp,
                now,
                tolerance,
            });
        }
        Ok(())
    }

    /// Step 3: some signature matches some active secret over `body`.
    ///
    /// Takes the [`CheckedHeaders`] that only
    /// [`check_timestamp`](Self::check_timestamp) makes, so the timestamp
    /// cannot be skipped; [`verify_at`](Self::verify_at) does all three
    /// steps at once. The steps apart let a server reject a malformed or
    /// stale request before reading its body:
    ///
    /// ```
    /// use hookgate_core::{Scheme, Signer, Verifier};
    ///
    /// let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    /// let scheme = Scheme::StandardWebhooks;
    /// let headers = Signer::new(scheme, scheme.secret(secret)?).sign("msg_1", 1_700_000_000, b"{}");
    /// let verifier = Verifier::from_secret_strings(scheme, [secret])?;
    ///
    /// let parsed = verifier.parse_headers(&headers)?; // 1. headers
    /// let checked = verifier.check_timestamp(parsed, 1_700_000_005)?; // 2. timestamp
    /// // ... read the body ...
    /// let verified = verifier.verify_parsed(&checked, b"{}")?; // 3. MAC
    /// assert_eq!(verified.id.as_deref(), Some("msg_1"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`VerifyError::NoMatchingSignature`].
    pub fn verify_parsed(
        &self,
        checked: &CheckedHeaders,
        body: &[u8],
    ) -> Result<Verified, VerifyError> {
        let parsed = &checked.parsed;
        let key_index = self.matching_key(parsed, body)?;
        Ok(self.verified(key_index, parsed.timestamp(), body, || {
            parsed.header_id().map(str::to_owned)
        }))
    }

    /// Index of the first secret for which some received signature matches.
    fn matching_key(&self, parsed: &ParsedHeaders, body: &[u8]) -> Result<usize, VerifyError> {
        // The signed bytes in one buffer, built once if an ed25519 key needs them.
        let mut message = None;
        self.secrets
            .iter()
            .position(|secret| {
                // Constant time, no early exit inside one secret's comparisons.
                self.scheme
                    .key_matches(secret, &parsed.inner, body, &mut message)
            })
            .ok_or(VerifyError::NoMatchingSignature)
    }

    fn verified(
        &self,
        key_index: usize,
        timestamp: Option<i64>,
        body: &[u8],
        header_id: impl FnOnce() -> Option<String>,
    ) -> Verified {
        let id = match &self.id_source {
            IdSource::Scheme if self.scheme.id_in_body() => scheme::json_id(body),
            IdSource::JsonField(field) => scheme::json_string_field(body, field),
            IdSource::Scheme | IdSource::Header(_) => header_id(),
        };
        Verified {
            scheme: self.scheme,
            id,
            timestamp,
            key_index,
        }
    }

    /// Verify `headers` and the raw `body` as of `now` (Unix seconds).
    ///
    /// # Errors
    /// Any [`VerifyError`], cheapest check first: headers, timestamp, MAC.
    pub fn verify_at(
        &self,
        headers: &(impl Headers + ?Sized),
        body: &[u8],
        now: i64,
    ) -> Result<Verified, VerifyError> {
        let parsed = self.parse_headers(headers)?;
        self.check_timestamp_ref(&parsed, now)?;
        let key_index = self.matching_key(&parsed, body)?;
        let timestamp = parsed.timestamp();
        // The parsed headers are ours: move the id out rather than copy it.
        Ok(self.verified(key_index, timestamp, body, || parsed.into_header_id()))
    }

    /// [`verify_at`](Self::verify_at) with the system clock.
    ///
    /// # Errors
    /// Any [`VerifyError`].
    pub fn verify(
        &self,
        headers: &(impl Headers + ?Sized),
        body: &[u8],
    ) -> Result<Verified, VerifyError> {
        self.verify_at(headers, body, unix_now())
    }
}

/// A key `scheme` takes (see [`Scheme::accepts`]).
pub(crate) fn check_key(scheme: Scheme, secret: &Secret) -> Result<(), ConfigError> {
    if scheme.accepts(secret.kind()) {
        return Ok(());
    }
    Err(ConfigError::WrongKeyKind {
        scheme: scheme.name(),
        expected: if scheme == Scheme::Discord {
            "an ed25519 public key (64 hex digits or whpk_...)"
        } else {
            "an HMAC secret, not an ed25519 key"
        },
    })
}
