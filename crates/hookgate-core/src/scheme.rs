//! The provider signature formats and their header parsers.

use std::{fmt, str::FromStr};

use base64::Engine as _;
use hmac::KeyInit as _;
use subtle::ConstantTimeEq as _;

use crate::{secret::KeyKind, ConfigError, Headers, Malformed, Secret, VerifyError};

pub use crate::custom::{
    Algorithm, CustomScheme, CustomSchemeBuilder, Encoding, MAX_CUSTOM_SCHEMES,
};

/// Length of an HMAC-SHA256 tag.
pub(crate) const MAC_LEN: usize = 32;
/// Length of an ed25519 signature.
pub(crate) const ED25519_LEN: usize = 64;
/// Longest tag of any scheme (HMAC-SHA512 and ed25519: 64 bytes).
pub(crate) const MAX_TAG_LEN: usize = 64;
/// Longest event id accepted from a header.
pub const MAX_ID_LEN: usize = 256;
/// Longest timestamp accepted (digits).
const MAX_TIMESTAMP_DIGITS: usize = 18;

/// A provider's webhook signature format.
///
/// | scheme | signed bytes | header(s) | encoding | timestamp | event id |
/// |---|---|---|---|---|---|
/// | `standard` (Standard Webhooks / Svix) | `id.timestamp.body` | `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<b64> ...` (`svix-*` aliases) | base64 | header | `webhook-id` |
/// | `stripe` | `timestamp.body` | `Stripe-Signature: t=..,v1=..` | hex | `t=` | JSON body `id` |
/// | `github` | `body` | `X-Hub-Signature-256: sha256=<hex>` | hex | none | `X-GitHub-Delivery` (unsigned) |
/// | `slack` | `v0:timestamp:body` | `X-Slack-Signature: v0=<hex>`, `X-Slack-Request-Timestamp` | hex | header | none (caller chooses) |
/// | `shopify` | `body` | `X-Shopify-Hmac-Sha256` | base64 | none | `X-Shopify-Webhook-Id` (unsigned) |
/// | `discord` (ed25519) | `timestamp` + `body` | `X-Signature-Ed25519: <hex>`, `X-Signature-Timestamp` | hex | header | JSON body `id` |
/// | custom ([`Scheme::custom`]) | a template over `{id}`, `{timestamp}`, `{body}` | any | hex / base64 | optional header | optional header |
///
/// Standard Webhooks also carries asymmetric `v1a,<base64 ed25519>`
/// signatures, verified with `whpk_` public keys and made with `whsk_`
/// signing keys, beside or instead of `v1` (see [`Secret::for_scheme`]).
///
/// ```
/// use hookgate_core::Scheme;
/// let s: Scheme = "stripe".parse()?;
/// assert_eq!(s, Scheme::Stripe);
/// assert_eq!(s.to_string(), "stripe");
/// assert!(s.has_timestamp());
/// assert!(!Scheme::GitHub.id_is_signed());
/// # Ok::<(), hookgate_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// Standard Webhooks (also Svix).
    StandardWebhooks,
    /// Stripe.
    Stripe,
    /// GitHub (`X-Hub-Signature-256`).
    GitHub,
    /// Slack (`v0` signatures).
    Slack,
    /// Shopify-style (`X-Shopify-Hmac-Sha256`).
    Shopify,
    /// Discord-style ed25519 (`X-Signature-Ed25519` over timestamp + body),
    /// verified with the application's public key.
    Discord,
    /// A custom HMAC scheme, from [`Scheme::custom`].
    Custom(&'static CustomScheme),
}

impl Scheme {
    /// The built-in schemes with a shared HMAC secret, in table order.
    /// (Discord takes an ed25519 key: see [`BUILT_IN`](Self::BUILT_IN).)
    pub const ALL: [Scheme; 5] = [
        Scheme::StandardWebhooks,
        Scheme::Stripe,
        Scheme::GitHub,
        Scheme::Slack,
        Scheme::Shopify,
    ];

    /// Every built-in scheme, in table order.
    pub const BUILT_IN: [Scheme; 6] = [
        Scheme::StandardWebhooks,
        Scheme::Stripe,
        Scheme::GitHub,
        Scheme::Slack,
        Scheme::Shopify,
        Scheme::Discord,
    ];

    /// A custom HMAC scheme whose signature is in header `signature_header`;
    /// see [`CustomSchemeBuilder`] and the [`custom`](crate::custom) module docs.
    pub fn custom(signature_header: &str) -> CustomSchemeBuilder {
        CustomSchemeBuilder::new(signature_header)
    }

    /// The scheme's short name: `standard`, `stripe`, `github`, `slack`,
    /// `shopify`, `discord`, or a custom scheme's name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::StandardWebhooks => "standard",
            Self::Stripe => "stripe",
            Self::GitHub => "github",
            Self::Slack => "slack",
            Self::Shopify => "shopify",
            Self::Discord => "discord",
            Self::Custom(c) => &c.name,
        }
    }

    /// Whether the scheme signs a timestamp (and so rejects stale deliveries).
    #[must_use]
    pub fn has_timestamp(self) -> bool {
        match self {
            Self::StandardWebhooks | Self::Stripe | Self::Slack | Self::Discord => true,
            Self::GitHub | Self::Shopify => false,
            Self::Custom(c) => c.timestamp_header.is_some(),
        }
    }

    /// Whether this scheme takes keys of `kind`: Standard Webhooks takes
    /// HMAC secrets and ed25519 keys, Discord ed25519 keys only, the others
    /// HMAC secrets only.
    #[must_use]
    pub fn accepts(self, kind: KeyKind) -> bool {
        match self {
            Self::StandardWebhooks => true,
            Self::Discord => kind != KeyKind::Hmac,
            _ => kind == KeyKind::Hmac,
        }
    }

    /// Whether the event id is read from the JSON body (Stripe, Discord).
    pub(crate) fn id_in_body(self) -> bool {
        matches!(self, Self::Stripe | Self::Discord)
    }

    /// Whether the event id is covered by the signature.
    ///
    /// GitHub's `X-GitHub-Delivery` and Shopify's `X-Shopify-Webhook-Id` are
    /// not signed: anyone replaying a captured request can change them, so
    /// deduplication must key on the body instead. Slack has no id.
    #[must_use]
    pub fn id_is_signed(self) -> bool {
        match self {
            Self::StandardWebhooks | Self::Stripe | Self::Discord => true,
            Self::GitHub | Self::Slack | Self::Shopify => false,
            Self::Custom(c) => c.id_is_signed(),
        }
    }

    /// Parse a secret string the way this provider does (see [`Secret`]).
    ///
    /// # Errors
    /// As [`Secret::for_scheme`].
    pub fn secret(self, secret: &str) -> Result<Secret, ConfigError> {
        Secret::for_scheme(self, secret)
    }

    /// Feed the bytes this scheme signs to `out`, in order.
    fn signed_pieces(self, id: &str, timestamp: &str, body: &[u8], mut out: impl FnMut(&[u8])) {
        match self {
            Self::StandardWebhooks => {
                out(id.as_bytes());
                out(b".");
                out(timestamp.as_bytes());
                out(b".");
            }
            Self::Stripe => {
                out(timestamp.as_bytes());
                out(b".");
            }
            Self::Slack => {
                out(b"v0:");
                out(timestamp.as_bytes());
                out(b":");
            }
            Self::Discord => out(timestamp.as_bytes()),
            Self::GitHub | Self::Shopify => {}
            Self::Custom(c) => {
                for part in &c.signed {
                    match part {
                        crate::custom::Part::Literal(l) => out(l.as_bytes()),
                        crate::custom::Part::Id => out(id.as_bytes()),
                        crate::custom::Part::Timestamp => out(timestamp.as_bytes()),
                        crate::custom::Part::Body => out(body),
                    }
                }
                return;
            }
        }
        out(body);
    }

    /// The signed bytes in one buffer (ed25519 signs a whole message).
    fn signed_message(self, id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
        let mut message = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 8);
        self.signed_pieces(id, timestamp, body, |b| message.extend_from_slice(b));
        message
    }

    /// The HMAC tag of the signed bytes, when `key` is an HMAC secret.
    fn hmac_tag(self, key: &Secret, id: &str, timestamp: &str, body: &[u8]) -> Option<Tag> {
        fn run<M: hmac::Mac>(mut mac: M, scheme: Scheme, id: &str, ts: &str, body: &[u8]) -> Tag {
            scheme.signed_pieces(id, ts, body, |b| mac.update(b));
            Tag::new(TagKind::Mac, &mac.finalize().into_bytes())
        }
        let algorithm = match self {
            Self::Custom(c) => c.algorithm,
            _ => Algorithm::Sha256,
        };
        Some(match algorithm {
            // Starts from the secret's precomputed keyed state.
            Algorithm::Sha256 => run(key.hmac()?, self, id, timestamp, body),
            Algorithm::Sha1 => run(
                hmac::Hmac::<sha1::Sha1>::new_from_slice(key.hmac_key()?).ok()?,
                self,
                id,
                timestamp,
                body,
            ),
            Algorithm::Sha512 => run(
                hmac::Hmac::<sha2::Sha512>::new_from_slice(key.hmac_key()?).ok()?,
                self,
                id,
                timestamp,
                body,
            ),
        })
    }

    /// The signature `key` makes over the signed bytes, if it can sign for
    /// this scheme. `message` caches the signed bytes for ed25519 keys.
    pub(crate) fn sign_tag(
        self,
        key: &Secret,
        id: &str,
        timestamp: &str,
        body: &[u8],
        message: &mut Option<Vec<u8>>,
    ) -> Option<Tag> {
        if !self.accepts(key.kind()) {
            return None;
        }
        if let Some(tag) = self.hmac_tag(key, id, timestamp, body) {
            return Some(tag);
        }
        let signing = key.signing_key()?;
        let message = message.get_or_insert_with(|| self.signed_message(id, timestamp, body));
        let signature = ed25519_dalek::Signer::sign(signing, message);
        Some(Tag::new(TagKind::Ed25519, &signature.to_bytes()))
    }

    /// Whether some received signature in `parsed` is valid for `key`.
    /// HMAC tags are compared in constant time, with no early exit across
    /// the received ones; ed25519 signatures are checked with
    /// `verify_strict` (public data, no secret to leak by timing).
    /// `message` caches the signed bytes for ed25519 keys.
    pub(crate) fn key_matches(
        self,
        key: &Secret,
        parsed: &Parsed,
        body: &[u8],
        message: &mut Option<Vec<u8>>,
    ) -> bool {
        if !self.accepts(key.kind()) {
            return false;
        }
        let id = parsed.id.as_deref().unwrap_or("");
        let ts = parsed.timestamp.as_ref().map_or("", |t| t.text());
        if let Some(expected) = self.hmac_tag(key, id, ts, body) {
            return parsed
                .signatures
                .iter()
                .filter(|sig| sig.kind == TagKind::Mac)
                .fold(subtle::Choice::from(0), |acc, sig| {
                    acc | expected.bytes().ct_eq(sig.bytes())
                })
                .into();
        }
        let Some(public) = key.verifying_key() else {
            return false;
        };
        let mut ed = parsed
            .signatures
            .iter()
            .filter(|sig| sig.kind == TagKind::Ed25519)
            .peekable();
        if ed.peek().is_none() {
            return false;
        }
        let message = message.get_or_insert_with(|| self.signed_message(id, ts, body));
        ed.any(|sig| {
            let mut bytes = [0u8; ED25519_LEN];
            bytes.copy_from_slice(sig.bytes());
            public
                .verify_strict(message, &ed25519_dalek::Signature::from_bytes(&bytes))
                .is_ok()
        })
    }

    /// Parse this scheme's headers: presence and syntax only, no MAC.
    pub(crate) fn parse(
        self,
        headers: &(impl Headers + ?Sized),
        max_signatures: usize,
    ) -> Result<Parsed, VerifyError> {
        match self {
            Self::StandardWebhooks => parse_standard(headers, max_signatures),
            Self::Stripe => parse_stripe(headers, max_signatures),
            Self::GitHub => {
                let sig = required(headers, &[names::GITHUB_SIGNATURE])?;
                let hex_sig = sig.value.strip_prefix("sha256=").ok_or(malformed(
                    sig.name,
                    if sig.value.contains('=') {
                        Malformed::NoSupportedSignature
                    } else {
                        Malformed::BadSyntax
                    },
                ))?;
                let mac = decode_hex(sig.name, hex_sig)?;
                let id = optional_id(headers, names::GITHUB_DELIVERY)?;
                Ok(Parsed::new(id, None, Signatures::one(mac)))
            }
            Self::Slack => {
                let ts = required(headers, &[names::SLACK_TIMESTAMP])?;
                let timestamp = parse_timestamp(ts.name, ts.value)?;
                let sig = required(headers, &[names::SLACK_SIGNATURE])?;
                let hex_sig = sig.value.strip_prefix("v0=").ok_or(malformed(
                    sig.name,
                    if sig.value.contains('=') {
                        Malformed::NoSupportedSignature
                    } else {
                        Malformed::BadSyntax
                    },
                ))?;
                let mac = decode_hex(sig.name, hex_sig)?;
                Ok(Parsed::new(None, Some(timestamp), Signatures::one(mac)))
            }
            Self::Shopify => {
                let sig = required(headers, &[names::SHOPIFY_SIGNATURE])?;
                let mac = decode_base64(sig.name, sig.value)?;
                let id = optional_id(headers, names::SHOPIFY_ID)?;
                Ok(Parsed::new(id, None, Signatures::one(mac)))
            }
            Self::Discord => {
                let ts = required(headers, &[names::DISCORD_TIMESTAMP])?;
                let timestamp = parse_timestamp(ts.name, ts.value)?;
                let sig = required(headers, &[names::DISCORD_SIGNATURE])?;
                let bytes = decode_hex_len(sig.name, sig.value, ED25519_LEN)?;
                let tag = Tag::new(TagKind::Ed25519, &bytes[..ED25519_LEN]);
                Ok(Parsed::new(None, Some(timestamp), Signatures::one_tag(tag)))
            }
            Self::Custom(c) => parse_custom(c, headers, max_signatures),
        }
    }

    /// Headers carrying `tags` (one per signing key) for a message.
    pub(crate) fn headers(
        self,
        id: &str,
        timestamp: &str,
        tags: &[Tag],
    ) -> Vec<(&'static str, String)> {
        let b64 = |t: &Tag| base64::engine::general_purpose::STANDARD.encode(t.bytes());
        let first = tags.first();
        let first_b64 = first.map(b64).unwrap_or_default();
        let first_hex = first.map(|t| hex::encode(t.bytes())).unwrap_or_default();
        match self {
            Self::StandardWebhooks => {
                let sigs: Vec<String> = tags
                    .iter()
                    .map(|t| match t.kind {
                        TagKind::Mac => format!("v1,{}", b64(t)),
                        TagKind::Ed25519 => format!("v1a,{}", b64(t)),
                    })
                    .collect();
                vec![
                    (names::STANDARD_ID, id.to_owned()),
                    (names::STANDARD_TIMESTAMP, timestamp.to_owned()),
                    (names::STANDARD_SIGNATURE, sigs.join(" ")),
                ]
            }
            Self::Stripe => {
                let mut value = format!("t={timestamp}");
                for t in tags {
                    value.push_str(",v1=");
                    value.push_str(&hex::encode(t.bytes()));
                }
                vec![(names::STRIPE_SIGNATURE, value)]
            }
            Self::GitHub => vec![
                (names::GITHUB_DELIVERY, id.to_owned()),
                (names::GITHUB_SIGNATURE, format!("sha256={first_hex}")),
            ],
            Self::Slack => vec![
                (names::SLACK_TIMESTAMP, timestamp.to_owned()),
                (names::SLACK_SIGNATURE, format!("v0={first_hex}")),
            ],
            Self::Shopify => vec![
                (names::SHOPIFY_ID, id.to_owned()),
                (names::SHOPIFY_SIGNATURE, first_b64),
            ],
            Self::Discord => vec![
                (names::DISCORD_SIGNATURE, first_hex),
                (names::DISCORD_TIMESTAMP, timestamp.to_owned()),
            ],
            Self::Custom(c) => {
                let encode = |t: &Tag| match c.encoding {
                    Encoding::Hex => format!("{}{}", c.prefix, hex::encode(t.bytes())),
                    Encoding::Base64 => format!("{}{}", c.prefix, b64(t)),
                };
                let value = match c.separator {
                    Some(sep) => tags
                        .iter()
                        .map(encode)
                        .collect::<Vec<_>>()
                        .join(&sep.to_string()),
                    None => first.map(encode).unwrap_or_default(),
                };
                let mut out = vec![(c.signature_header.as_str(), value)];
                if let Some(h) = &c.timestamp_header {
                    out.push((h.as_str(), timestamp.to_owned()));
                }
                if let Some(h) = &c.id_header {
                    out.push((h.as_str(), id.to_owned()));
                }
                out
            }
        }
    }

    /// Whether the scheme's header carries several signatures (so a signer
    /// with several secrets can sign with all of them): Standard Webhooks,
    /// Stripe, and custom schemes with a signature separator.
    #[must_use]
    pub fn multi_signature(self) -> bool {
        match self {
            Self::StandardWebhooks | Self::Stripe => true,
            Self::Custom(c) => c.separator.is_some(),
            _ => false,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheme {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "standard" | "standard-webhooks" | "standardwebhooks" | "svix" => {
                Ok(Self::StandardWebhooks)
            }
            "stripe" => Ok(Self::Stripe),
            "github" => Ok(Self::GitHub),
            "slack" => Ok(Self::Slack),
            "shopify" => Ok(Self::Shopify),
            "discord" => Ok(Self::Discord),
            _ => Err(ConfigError::UnknownScheme(s.chars().take(64).collect())),
        }
    }
}

/// Header names, as the providers spell them.
pub mod names {
    /// Standard Webhooks message id.
    pub const STANDARD_ID: &str = "webhook-id";
    /// Standard Webhooks timestamp.
    pub const STANDARD_TIMESTAMP: &str = "webhook-timestamp";
    /// Standard Webhooks signature list.
    pub const STANDARD_SIGNATURE: &str = "webhook-signature";
    /// Svix alias of [`STANDARD_ID`].
    pub const SVIX_ID: &str = "svix-id";
    /// Svix alias of [`STANDARD_TIMESTAMP`].
    pub const SVIX_TIMESTAMP: &str = "svix-timestamp";
    /// Svix alias of [`STANDARD_SIGNATURE`].
    pub const SVIX_SIGNATURE: &str = "svix-signature";
    /// Stripe's signature header.
    pub const STRIPE_SIGNATURE: &str = "Stripe-Signature";
    /// GitHub's SHA-256 signature header.
    pub const GITHUB_SIGNATURE: &str = "X-Hub-Signature-256";
    /// GitHub's delivery id (not signed).
    pub const GITHUB_DELIVERY: &str = "X-GitHub-Delivery";
    /// Slack's signature header.
    pub const SLACK_SIGNATURE: &str = "X-Slack-Signature";
    /// Slack's timestamp header.
    pub const SLACK_TIMESTAMP: &str = "X-Slack-Request-Timestamp";
    /// Shopify's signature header.
    pub const SHOPIFY_SIGNATURE: &str = "X-Shopify-Hmac-Sha256";
    /// Shopify's webhook id (not signed).
    pub const SHOPIFY_ID: &str = "X-Shopify-Webhook-Id";
    /// Discord's ed25519 signature (hex).
    pub const DISCORD_SIGNATURE: &str = "X-Signature-Ed25519";
    /// Discord's timestamp (signed, prepended to the body).
    pub const DISCORD_TIMESTAMP: &str = "X-Signature-Timestamp";
}

/// Headers parsed for one scheme, before any MAC is computed.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub(crate) id: Option<String>,
    /// Parsed value and the exact text that was signed.
    pub(crate) timestamp: Option<Timestamp>,
    pub(crate) signatures: Signatures,
}

impl Parsed {
    fn new(id: Option<String>, timestamp: Option<Timestamp>, signatures: Signatures) -> Self {
        Self {
            id,
            timestamp,
            signatures,
        }
    }
}

/// A signed timestamp: its value and the exact digits that were signed
/// (leading zeros and all), kept inline so parsing does not allocate.
#[derive(Clone, Copy)]
pub(crate) struct Timestamp {
    pub(crate) value: i64,
    text: [u8; MAX_TIMESTAMP_DIGITS],
    len: u8,
}

impl Timestamp {
    /// The digits as received.
    pub(crate) fn text(&self) -> &str {
        // Only ASCII digits are ever stored.
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// What a received signature is: an HMAC tag or an ed25519 signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TagKind {
    Mac,
    Ed25519,
}

/// One received (or made) signature: its kind and its decoded bytes.
#[derive(Clone, Copy)]
pub(crate) struct Tag {
    pub(crate) kind: TagKind,
    len: u8,
    bytes: [u8; MAX_TAG_LEN],
}

impl Tag {
    /// `bytes` is at most [`MAX_TAG_LEN`] long (every caller's is); longer is cut.
    pub(crate) fn new(kind: TagKind, bytes: &[u8]) -> Self {
        let len = bytes.len().min(MAX_TAG_LEN);
        let mut out = [0u8; MAX_TAG_LEN];
        out[..len].copy_from_slice(&bytes[..len]);
        Self {
            kind,
            // At most 64.
            len: u8::try_from(len).unwrap_or(0),
            bytes: out,
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Decoded signatures from one header. The first [`INLINE_SIGNATURES`] are
/// kept inline (the common case: one, or two during a key rotation), so
/// parsing does not allocate for them; more spill into a vector bounded by
/// the verifier's signature limit.
#[derive(Clone)]
pub(crate) struct Signatures {
    inline: [Tag; INLINE_SIGNATURES],
    len: usize,
    spill: Vec<Tag>,
}

const INLINE_SIGNATURES: usize = 2;

impl Signatures {
    pub(crate) fn new() -> Self {
        Self {
            inline: [Tag::new(TagKind::Mac, &[]); INLINE_SIGNATURES],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn one(mac: [u8; MAC_LEN]) -> Self {
        Self::one_tag(Tag::new(TagKind::Mac, &mac))
    }

    fn one_tag(tag: Tag) -> Self {
        let mut s = Self::new();
        s.push_tag(tag);
        s
    }

    pub(crate) fn push(&mut self, mac: [u8; MAC_LEN]) {
        self.push_tag(Tag::new(TagKind::Mac, &mac));
    }

    pub(crate) fn push_tag(&mut self, tag: Tag) {
        if self.len < INLINE_SIGNATURES {
            self.inline[self.len] = tag;
        } else {
            self.spill.push(tag);
        }
        self.len += 1;
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Tag> {
        self.inline[..self.len.min(INLINE_SIGNATURES)]
            .iter()
            .chain(self.spill.iter())
    }
}

impl fmt::Debug for Signatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Received MACs are not secret, but there is no use in printing them.
        write!(f, "Signatures({})", self.len)
    }
}

struct Found<'a> {
    name: &'static str,
    value: &'a str,
}

fn malformed(name: &'static str, reason: Malformed) -> VerifyError {
    VerifyError::MalformedHeader { name, reason }
}

/// The first of `names` present, as visible-ASCII text.
fn lookup<'h>(
    headers: &'h (impl Headers + ?Sized),
    names: &[&'static str],
) -> Result<Option<Found<'h>>, VerifyError> {
    for &name in names {
        if let Some(raw) = headers.header(name) {
            // Visible ASCII plus space/tab; anything else is not a valid value here.
            if !all_bytes(raw, |b| matches!(b, 0x20..=0x7e | b'\t')) {
                return Err(malformed(name, Malformed::NotText));
            }
            let value = std::str::from_utf8(raw)
                .map_err(|_| malformed(name, Malformed::NotText))?
                .trim_matches([' ', '\t']);
            if value.is_empty() {
                return Err(malformed(name, Malformed::Empty));
            }
            return Ok(Some(Found { name, value }));
        }
    }
    Ok(None)
}

fn required<'h>(
    headers: &'h (impl Headers + ?Sized),
    names: &[&'static str],
) -> Result<Found<'h>, VerifyError> {
    lookup(headers, names)?.ok_or(VerifyError::MissingHeader { name: names[0] })
}

fn check_id(name: &'static str, id: &str) -> Result<String, VerifyError> {
    if id.len() > MAX_ID_LEN {
        return Err(malformed(name, Malformed::TooLong { max: MAX_ID_LEN }));
    }
    if !all_bytes(id.as_bytes(), |b| matches!(b, 0x21..=0x7e)) {
        return Err(malformed(name, Malformed::NotText));
    }
    Ok(id.to_owned())
}

/// Whether `pred` holds for every byte. Without `all`'s early exit, so the
/// compiler can check many bytes per instruction (header values are short,
/// and valid ones are scanned to the end anyway).
fn all_bytes(bytes: &[u8], pred: impl Fn(u8) -> bool) -> bool {
    bytes.iter().fold(true, |ok, &b| ok & pred(b))
}

pub(crate) fn optional_id(
    headers: &(impl Headers + ?Sized),
    name: &'static str,
) -> Result<Option<String>, VerifyError> {
    lookup(headers, &[name])?
        .map(|f| check_id(f.name, f.value))
        .transpose()
}

/// Plain decimal seconds: ASCII digits only, no sign, no fraction.
pub(crate) fn parse_timestamp(name: &'static str, s: &str) -> Result<Timestamp, VerifyError> {
    if s.is_empty()
        || s.len() > MAX_TIMESTAMP_DIGITS
        || !all_bytes(s.as_bytes(), |b| b.is_ascii_digit())
    {
        return Err(malformed(name, Malformed::BadTimestamp));
    }
    // At most 18 digits: below 10^18 < i64::MAX, so this cannot overflow.
    let value = s
        .bytes()
        .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
    let mut text = [0u8; MAX_TIMESTAMP_DIGITS];
    text[..s.len()].copy_from_slice(s.as_bytes());
    Ok(Timestamp {
        value,
        text,
        // At most MAX_TIMESTAMP_DIGITS (18), checked above.
        len: u8::try_from(s.len()).unwrap_or(0),
    })
}

fn decode_hex(name: &'static str, s: &str) -> Result<[u8; MAC_LEN], VerifyError> {
    let bytes = decode_hex_len(name, s, MAC_LEN)?;
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&bytes[..MAC_LEN]);
    Ok(out)
}

/// Hex of exactly `len` (at most [`MAX_TAG_LEN`]) bytes, into the front of the result.
fn decode_hex_len(
    name: &'static str,
    s: &str,
    len: usize,
) -> Result<[u8; MAX_TAG_LEN], VerifyError> {
    if s.is_empty() {
        return Err(malformed(name, Malformed::Empty));
    }
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed(name, Malformed::BadEncoding { encoding: "hex" }));
    }
    if s.len() != len * 2 || len > MAX_TAG_LEN {
        return Err(malformed(name, Malformed::WrongLength { len: s.len() / 2 }));
    }
    let mut out = [0u8; MAX_TAG_LEN];
    hex::decode_to_slice(s, &mut out[..len])
        .map_err(|_| malformed(name, Malformed::BadEncoding { encoding: "hex" }))?;
    Ok(out)
}

fn decode_base64(name: &'static str, s: &str) -> Result<[u8; MAC_LEN], VerifyError> {
    let bytes = decode_base64_len(name, s, MAC_LEN)?;
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&bytes[..MAC_LEN]);
    Ok(out)
}

/// Base64 of exactly `len` (at most [`MAX_TAG_LEN`]) bytes, into the front of the result.
fn decode_base64_len(
    name: &'static str,
    s: &str,
    len: usize,
) -> Result<[u8; MAX_TAG_LEN], VerifyError> {
    if s.is_empty() {
        return Err(malformed(name, Malformed::Empty));
    }
    // `len` bytes are about 4/3 as many base64 characters; anything twice
    // as long cannot be such a tag, so don't decode it.
    if s.len() > len * 2 {
        return Err(malformed(
            name,
            Malformed::WrongLength {
                len: s.len() * 3 / 4,
            },
        ));
    }
    // len * 2 characters decode to at most len * 3 / 2 bytes.
    let mut buf = [0u8; MAX_TAG_LEN * 3 / 2];
    let decoded = base64::engine::general_purpose::STANDARD
        .decode_slice(s.as_bytes(), &mut buf)
        .map_err(|_| malformed(name, Malformed::BadEncoding { encoding: "base64" }))?;
    if decoded != len || len > MAX_TAG_LEN {
        return Err(malformed(name, Malformed::WrongLength { len: decoded }));
    }
    let mut out = [0u8; MAX_TAG_LEN];
    out[..len].copy_from_slice(&buf[..len]);
    Ok(out)
}

fn parse_standard(
    headers: &(impl Headers + ?Sized),
    max_signatures: usize,
) -> Result<Parsed, VerifyError> {
    use names::*;
    let id = required(headers, &[STANDARD_ID, SVIX_ID])?;
    let id = check_id(id.name, id.value)?;
    let ts = required(headers, &[STANDARD_TIMESTAMP, SVIX_TIMESTAMP])?;
    let timestamp = parse_timestamp(ts.name, ts.value)?;
    let sig = required(headers, &[STANDARD_SIGNATURE, SVIX_SIGNATURE])?;
    let mut signatures = Signatures::new();
    // The first malformed entry, reported only when no entry is usable.
    let mut first_error = None;
    // Space-delimited (tabs tolerated); empty entries from repeated spaces skipped.
    let entries = sig.value.split([' ', '\t']).filter(|e| !e.is_empty());
    for (n, entry) in entries.enumerate() {
        // Every entry counts toward the bound, malformed or not.
        if n >= max_signatures {
            return Err(malformed(
                sig.name,
                Malformed::TooManySignatures {
                    max: max_signatures,
                },
            ));
        }
        // A malformed entry is skipped, as the reference libraries do (they
        // compare each `v1` entry and ignore what does not match), so one
        // bad entry next to a valid signature does not fail the delivery.
        let decoded = match entry.split_once(',') {
            None => Err(malformed(sig.name, Malformed::BadSyntax)),
            Some(("v1", value)) => {
                decode_base64(sig.name, value).map(|mac| Some(Tag::new(TagKind::Mac, &mac)))
            }
            // Asymmetric (ed25519) signatures.
            Some(("v1a", value)) => decode_base64_len(sig.name, value, ED25519_LEN)
                .map(|b| Some(Tag::new(TagKind::Ed25519, &b[..ED25519_LEN]))),
            Some(_) => Ok(None),
        };
        match decoded {
            Ok(Some(tag)) => signatures.push_tag(tag),
            Ok(None) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if signatures.is_empty() {
        return Err(first_error.unwrap_or(malformed(sig.name, Malformed::NoSupportedSignature)));
    }
    Ok(Parsed::new(Some(id), Some(timestamp), signatures))
}

fn parse_stripe(
    headers: &(impl Headers + ?Sized),
    max_signatures: usize,
) -> Result<Parsed, VerifyError> {
    let sig = required(headers, &[names::STRIPE_SIGNATURE])?;
    let mut timestamp = None;
    let mut signatures = Signatures::new();
    // Bound the loop too: a header of thousands of ignored entries is rejected.
    for (n, item) in sig.value.split(',').enumerate() {
        if n >= max_signatures.saturating_mul(2).saturating_add(2) {
            return Err(malformed(
                sig.name,
                Malformed::TooManySignatures {
                    max: max_signatures,
                },
            ));
        }
        let (key, value) = item
            .trim_matches([' ', '\t'])
            .split_once('=')
            .ok_or(malformed(sig.name, Malformed::BadSyntax))?;
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(malformed(sig.name, Malformed::BadSyntax));
                }
                timestamp = Some(parse_timestamp(sig.name, value)?);
            }
            "v1" => {
                if signatures.len() >= max_signatures {
                    return Err(malformed(
                        sig.name,
                        Malformed::TooManySignatures {
                            max: max_signatures,
                        },
                    ));
                }
                signatures.push(decode_hex(sig.name, value)?);
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(malformed(sig.name, Malformed::BadTimestamp))?;
    if signatures.is_empty() {
        return Err(malformed(sig.name, Malformed::NoSupportedSignature));
    }
    Ok(Parsed::new(None, Some(timestamp), signatures))
}

fn parse_custom(
    c: &'static CustomScheme,
    headers: &(impl Headers + ?Sized),
    max_signatures: usize,
) -> Result<Parsed, VerifyError> {
    let timestamp = match &c.timestamp_header {
        Some(name) => {
            let ts = required(headers, &[name.as_str()])?;
            Some(parse_timestamp(ts.name, ts.value)?)
        }
        None => None,
    };
    let id = match &c.id_header {
        // A signed id must be there; an unsigned one is only reported.
        Some(name) if c.id_is_signed() => {
            let found = required(headers, &[name.as_str()])?;
            Some(check_id(found.name, found.value)?)
        }
        Some(name) => optional_id(headers, name)?,
        None => None,
    };
    let sig = required(headers, &[c.signature_header.as_str()])?;
    let len = c.algorithm.tag_len();
    let decode = |entry: &str| -> Result<Tag, VerifyError> {
        let value = entry.strip_prefix(c.prefix.as_str()).ok_or(malformed(
            sig.name,
            if entry.contains('=') {
                Malformed::NoSupportedSignature
            } else {
                Malformed::BadSyntax
            },
        ))?;
        let bytes = match c.encoding {
            Encoding::Hex => decode_hex_len(sig.name, value, len)?,
            Encoding::Base64 => decode_base64_len(sig.name, value, len)?,
        };
        Ok(Tag::new(TagKind::Mac, &bytes[..len]))
    };
    let Some(sep) = c.separator else {
        return Ok(Parsed::new(
            id,
            timestamp,
            Signatures::one_tag(decode(sig.value)?),
        ));
    };
    let mut signatures = Signatures::new();
    let mut first_error = None;
    let entries = sig
        .value
        .split(sep)
        .map(|e| e.trim_matches([' ', '\t']))
        .filter(|e| !e.is_empty());
    for (n, entry) in entries.enumerate() {
        if n >= max_signatures {
            return Err(malformed(
                sig.name,
                Malformed::TooManySignatures {
                    max: max_signatures,
                },
            ));
        }
        // As for Standard Webhooks: a malformed entry beside a valid one is skipped.
        match decode(entry) {
            Ok(tag) => signatures.push_tag(tag),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if signatures.is_empty() {
        return Err(first_error.unwrap_or(malformed(sig.name, Malformed::Empty)));
    }
    Ok(Parsed::new(id, timestamp, signatures))
}

/// The top-level string `field` of a JSON object body, if there is one.
pub(crate) fn json_string_field(body: &[u8], field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = value.get(field)?.as_str()?;
    check_id("body", id).ok()
}

/// Stripe's event id: the body's top-level `"id"` string. Parsed without
/// building the whole document.
pub(crate) fn json_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow)]
        id: Option<std::borrow::Cow<'a, str>>,
    }
    let parsed: IdOnly<'_> = serde_json::from_slice(body).ok()?;
    check_id("body", parsed.id.as_deref()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_spill_past_the_inline_ones_in_order() {
        let mut s = Signatures::new();
        assert!(s.is_empty());
        for n in 0..5u8 {
            s.push([n; MAC_LEN]);
        }
        assert_eq!(s.len(), 5);
        let firsts: Vec<u8> = s.iter().map(|m| m.bytes()[0]).collect();
        assert_eq!(firsts, [0, 1, 2, 3, 4]);
        assert_eq!(format!("{s:?}"), "Signatures(5)");
        let one = Signatures::one([9; MAC_LEN]);
        assert_eq!(one.iter().count(), 1);
    }

    #[test]
    fn timestamps_keep_the_signed_text() {
        let t = parse_timestamp("t", "0001700000000").unwrap();
        assert_eq!(t.value, 1_700_000_000);
        assert_eq!(t.text(), "0001700000000");
        let max = parse_timestamp("t", "999999999999999999").unwrap();
        assert_eq!(max.value, 999_999_999_999_999_999);
        for bad in ["", "1000000000000000000", "12a", "-1", "+1", " 1", "1.0"] {
            assert_eq!(
                parse_timestamp("t", bad).unwrap_err(),
                malformed("t", Malformed::BadTimestamp),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn header_values_must_be_visible_ascii() {
        let text = |b: u8| matches!(b, 0x20..=0x7e | b'\t');
        assert!(all_bytes(b"v1,abc def\t", text));
        assert!(!all_bytes(b"v1,\x00", text));
        assert!(!all_bytes("\u{e9}".as_bytes(), text));
        assert!(all_bytes(b"", |_| false));
    }
}
