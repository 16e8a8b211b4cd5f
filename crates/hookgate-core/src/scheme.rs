//! The provider signature formats and their header parsers.

use std::{fmt, str::FromStr};

use base64::Engine as _;
use hmac::Mac as _;

use crate::{ConfigError, Headers, Malformed, Secret, VerifyError};

/// Length of an HMAC-SHA256 tag.
pub(crate) const MAC_LEN: usize = 32;
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
}

impl Scheme {
    /// Every scheme, in table order.
    pub const ALL: [Scheme; 5] = [
        Scheme::StandardWebhooks,
        Scheme::Stripe,
        Scheme::GitHub,
        Scheme::Slack,
        Scheme::Shopify,
    ];

    /// The scheme's short name: `standard`, `stripe`, `github`, `slack`, `shopify`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::StandardWebhooks => "standard",
            Self::Stripe => "stripe",
            Self::GitHub => "github",
            Self::Slack => "slack",
            Self::Shopify => "shopify",
        }
    }

    /// Whether the scheme signs a timestamp (and so rejects stale deliveries).
    #[must_use]
    pub fn has_timestamp(self) -> bool {
        matches!(self, Self::StandardWebhooks | Self::Stripe | Self::Slack)
    }

    /// Whether the event id is covered by the signature.
    ///
    /// GitHub's `X-GitHub-Delivery` and Shopify's `X-Shopify-Webhook-Id` are
    /// not signed: anyone replaying a captured request can change them, so
    /// deduplication must key on the body instead. Slack has no id.
    #[must_use]
    pub fn id_is_signed(self) -> bool {
        matches!(self, Self::StandardWebhooks | Self::Stripe)
    }

    /// Parse a secret string the way this provider does (see [`Secret`]).
    ///
    /// # Errors
    /// As [`Secret::for_scheme`].
    pub fn secret(self, secret: &str) -> Result<Secret, ConfigError> {
        Secret::for_scheme(self, secret)
    }

    /// HMAC-SHA256 of the bytes this scheme signs.
    pub(crate) fn mac(self, key: &Secret, id: &str, timestamp: &str, body: &[u8]) -> [u8; MAC_LEN] {
        // Starts from the secret's precomputed keyed state.
        let mut mac = key.hmac();
        match self {
            Self::StandardWebhooks => {
                mac.update(id.as_bytes());
                mac.update(b".");
                mac.update(timestamp.as_bytes());
                mac.update(b".");
            }
            Self::Stripe => {
                mac.update(timestamp.as_bytes());
                mac.update(b".");
            }
            Self::Slack => {
                mac.update(b"v0:");
                mac.update(timestamp.as_bytes());
                mac.update(b":");
            }
            Self::GitHub | Self::Shopify => {}
        }
        mac.update(body);
        mac.finalize().into_bytes().into()
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
        }
    }

    /// Headers carrying `macs` (one per active secret) for a message.
    pub(crate) fn headers(
        self,
        id: &str,
        timestamp: &str,
        macs: &[[u8; MAC_LEN]],
    ) -> Vec<(&'static str, String)> {
        let b64 = |m: &[u8; MAC_LEN]| base64::engine::general_purpose::STANDARD.encode(m);
        let first = macs.first().copied().unwrap_or_default();
        match self {
            Self::StandardWebhooks => {
                let sigs: Vec<String> = macs.iter().map(|m| format!("v1,{}", b64(m))).collect();
                vec![
                    (names::STANDARD_ID, id.to_owned()),
                    (names::STANDARD_TIMESTAMP, timestamp.to_owned()),
                    (names::STANDARD_SIGNATURE, sigs.join(" ")),
                ]
            }
            Self::Stripe => {
                let mut value = format!("t={timestamp}");
                for m in macs {
                    value.push_str(",v1=");
                    value.push_str(&hex::encode(m));
                }
                vec![(names::STRIPE_SIGNATURE, value)]
            }
            Self::GitHub => vec![
                (names::GITHUB_DELIVERY, id.to_owned()),
                (
                    names::GITHUB_SIGNATURE,
                    format!("sha256={}", hex::encode(first)),
                ),
            ],
            Self::Slack => vec![
                (names::SLACK_TIMESTAMP, timestamp.to_owned()),
                (names::SLACK_SIGNATURE, format!("v0={}", hex::encode(first))),
            ],
            Self::Shopify => vec![
                (names::SHOPIFY_ID, id.to_owned()),
                (names::SHOPIFY_SIGNATURE, b64(&first)),
            ],
        }
    }

    /// Whether the scheme's header carries several signatures (so a signer
    /// with several secrets can sign with all of them): Standard Webhooks
    /// and Stripe.
    #[must_use]
    pub fn multi_signature(self) -> bool {
        matches!(self, Self::StandardWebhooks | Self::Stripe)
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

/// Decoded MACs from one header. The first [`INLINE_SIGNATURES`] are kept
/// inline (the common case: one, or two during a key rotation), so parsing
/// does not allocate for them; more spill into a vector bounded by the
/// verifier's signature limit.
#[derive(Clone)]
pub(crate) struct Signatures {
    inline: [[u8; MAC_LEN]; INLINE_SIGNATURES],
    len: usize,
    spill: Vec<[u8; MAC_LEN]>,
}

const INLINE_SIGNATURES: usize = 2;

impl Signatures {
    pub(crate) fn new() -> Self {
        Self {
            inline: [[0; MAC_LEN]; INLINE_SIGNATURES],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn one(mac: [u8; MAC_LEN]) -> Self {
        let mut s = Self::new();
        s.push(mac);
        s
    }

    pub(crate) fn push(&mut self, mac: [u8; MAC_LEN]) {
        if self.len < INLINE_SIGNATURES {
            self.inline[self.len] = mac;
        } else {
            self.spill.push(mac);
        }
        self.len += 1;
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8; MAC_LEN]> {
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
    if s.is_empty() {
        return Err(malformed(name, Malformed::Empty));
    }
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed(name, Malformed::BadEncoding { encoding: "hex" }));
    }
    if s.len() != MAC_LEN * 2 {
        return Err(malformed(name, Malformed::WrongLength { len: s.len() / 2 }));
    }
    let mut out = [0u8; MAC_LEN];
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| malformed(name, Malformed::BadEncoding { encoding: "hex" }))?;
    Ok(out)
}

fn decode_base64(name: &'static str, s: &str) -> Result<[u8; MAC_LEN], VerifyError> {
    if s.is_empty() {
        return Err(malformed(name, Malformed::Empty));
    }
    // 32 bytes are 44 base64 characters; anything much longer cannot be a
    // SHA-256 MAC, so don't decode it.
    if s.len() > 64 {
        return Err(malformed(
            name,
            Malformed::WrongLength {
                len: s.len() * 3 / 4,
            },
        ));
    }
    let mut buf = [0u8; 48];
    let len = base64::engine::general_purpose::STANDARD
        .decode_slice(s.as_bytes(), &mut buf)
        .map_err(|_| malformed(name, Malformed::BadEncoding { encoding: "base64" }))?;
    if len != MAC_LEN {
        return Err(malformed(name, Malformed::WrongLength { len }));
    }
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&buf[..MAC_LEN]);
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
            Some(("v1", value)) => decode_base64(sig.name, value).map(Some),
            Some(_) => Ok(None),
        };
        match decoded {
            Ok(Some(mac)) => signatures.push(mac),
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
        let firsts: Vec<u8> = s.iter().map(|m| m[0]).collect();
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
