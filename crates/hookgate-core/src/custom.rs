//! Custom HMAC schemes: any provider that signs with HMAC, described by data
//! instead of code.
//!
//! A [`CustomScheme`] says which header carries the signature, which bytes are
//! signed (a template over `{id}`, `{timestamp}` and `{body}`), the hash
//! (`sha1`, `sha256`, `sha512`), the encoding (`hex`, `base64`), an optional
//! prefix (`sha256=`, `v0=`), an optional separator for several signatures
//! in one header, and the headers carrying the timestamp and the event id.
//! It gets the same guarantees as the built-in schemes: constant-time
//! comparison on decoded bytes, a bounded number of signatures examined, the
//! timestamp tolerance checked before any MAC, a parser that never panics.
//!
//! Zoom's documented format (`x-zm-signature: v0=<hex HMAC-SHA256 of
//! "v0:{timestamp}:{body}">`, `x-zm-request-timestamp`):
//!
//! ```
//! use hookgate_core::{Scheme, Signer, Verifier};
//!
//! let zoom = Scheme::custom("x-zm-signature")
//!     .name("zoom")
//!     .signed("v0:{timestamp}:{body}")
//!     .prefix("v0=")
//!     .timestamp_header("x-zm-request-timestamp")
//!     .build()?;
//! let headers = Signer::new(zoom, zoom.secret("zoom secret token")?).sign("", 1_700_000_000, b"{}");
//! let verifier = Verifier::from_secret_strings(zoom, ["zoom secret token"])?;
//! assert!(verifier.verify_at(&headers, b"{}", 1_700_000_000).is_ok());
//! assert_eq!(zoom.name(), "zoom");
//! # Ok::<(), hookgate_core::ConfigError>(())
//! ```
//!
//! The same from TOML (feature `toml`), as `hookgate --scheme-file` reads it:
//!
//! ```toml
//! name = "zoom"
//! signature_header = "x-zm-signature"
//! signed = "v0:{timestamp}:{body}"
//! algorithm = "sha256"      # sha1 | sha256 | sha512
//! encoding = "hex"          # hex | base64
//! prefix = "v0="
//! timestamp_header = "x-zm-request-timestamp"
//! # id_header = "x-request-id"   # the event id (signed only if `signed` has {id})
//! # separator = ","              # several signatures in one header
//! ```
//!
//! # Lifetime
//! A [`Scheme`] is a small `Copy` value, so a built custom scheme refers to
//! its definition for the rest of the process. Definitions are interned:
//! building the same definition again returns the same scheme and costs no
//! memory, and at most [`MAX_CUSTOM_SCHEMES`] distinct definitions can exist
//! (schemes are configuration, built at start-up, not per request).

use std::{fmt, str::FromStr, sync::Mutex};

use crate::{ConfigError, Scheme};

/// At most this many distinct custom schemes per process.
pub const MAX_CUSTOM_SCHEMES: usize = 256;
/// Longest `signed` template accepted.
const MAX_TEMPLATE_LEN: usize = 256;
/// Longest header name accepted.
const MAX_HEADER_NAME_LEN: usize = 64;
/// Longest signature prefix accepted.
const MAX_PREFIX_LEN: usize = 32;

/// The hash a custom scheme's HMAC uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC-SHA1 (20-byte tags; still used by some providers).
    Sha1,
    /// HMAC-SHA256 (32-byte tags).
    #[default]
    Sha256,
    /// HMAC-SHA512 (64-byte tags).
    Sha512,
}

impl Algorithm {
    /// Length of the tag in bytes.
    #[must_use]
    pub fn tag_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }

    /// `sha1`, `sha256` or `sha512`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }
}

impl FromStr for Algorithm {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "sha1" => Ok(Self::Sha1),
            "sha256" => Ok(Self::Sha256),
            "sha512" => Ok(Self::Sha512),
            _ => Err(invalid("algorithm", "expected sha1, sha256 or sha512")),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a custom scheme writes its signature bytes in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Encoding {
    /// Hex digits (either case accepted; lower case written).
    #[default]
    Hex,
    /// Standard base64 with padding.
    Base64,
}

impl Encoding {
    /// `hex` or `base64`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Hex => "hex",
            Self::Base64 => "base64",
        }
    }
}

impl FromStr for Encoding {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "hex" => Ok(Self::Hex),
            "base64" => Ok(Self::Base64),
            _ => Err(invalid("encoding", "expected hex or base64")),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One piece of the signed bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Part {
    Literal(String),
    Id,
    Timestamp,
    Body,
}

/// The definition of a custom HMAC scheme. Build one with
/// [`Scheme::custom`]; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CustomScheme {
    pub(crate) name: String,
    pub(crate) signature_header: String,
    pub(crate) template: String,
    pub(crate) signed: Vec<Part>,
    pub(crate) algorithm: Algorithm,
    pub(crate) encoding: Encoding,
    pub(crate) prefix: String,
    pub(crate) separator: Option<char>,
    pub(crate) timestamp_header: Option<String>,
    pub(crate) id_header: Option<String>,
}

impl CustomScheme {
    /// The scheme's name (metrics labels, logs, `Verified::scheme`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signature header's name.
    #[must_use]
    pub fn signature_header(&self) -> &str {
        &self.signature_header
    }

    /// The signed-bytes template, as given.
    #[must_use]
    pub fn signed(&self) -> &str {
        &self.template
    }

    /// The HMAC hash.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The signature encoding.
    #[must_use]
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The prefix before each signature (empty for none).
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The separator between several signatures, if the header may carry several.
    #[must_use]
    pub fn separator(&self) -> Option<char> {
        self.separator
    }

    /// The timestamp header, if the scheme signs a timestamp.
    #[must_use]
    pub fn timestamp_header(&self) -> Option<&str> {
        self.timestamp_header.as_deref()
    }

    /// The event id header, if any.
    #[must_use]
    pub fn id_header(&self) -> Option<&str> {
        self.id_header.as_deref()
    }

    /// Whether the event id is covered by the signature (`{id}` in the template).
    #[must_use]
    pub fn id_is_signed(&self) -> bool {
        self.signed.contains(&Part::Id)
    }

    /// Build a custom scheme from a small TOML document (see the
    /// [module docs](self) for the keys; unknown keys are refused, so a
    /// misspelt one is not silently ignored).
    ///
    /// ```
    /// let linear = hookgate_core::scheme::CustomScheme::from_toml(r#"
    ///     name = "linear"
    ///     signature_header = "linear-signature"
    /// "#)?;
    /// assert_eq!(linear.name(), "linear");
    /// # Ok::<(), hookgate_core::ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::InvalidCustomSchemeFile`] when the TOML does not parse
    /// (with the line), [`ConfigError::InvalidCustomScheme`] when a value is
    /// invalid.
    #[cfg(feature = "toml")]
    #[cfg_attr(docsrs, doc(cfg(feature = "toml")))]
    pub fn from_toml(text: &str) -> Result<Scheme, ConfigError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            name: Option<String>,
            signature_header: String,
            signed: Option<String>,
            algorithm: Option<String>,
            encoding: Option<String>,
            prefix: Option<String>,
            separator: Option<String>,
            timestamp_header: Option<String>,
            id_header: Option<String>,
        }
        let file: File = toml::from_str(text).map_err(|e| {
            // The message only: toml's Display quotes the offending line,
            // which must not end up in logs if someone put a secret there.
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            ConfigError::InvalidCustomSchemeFile {
                line,
                message: e.message().chars().take(200).collect(),
            }
        })?;
        let mut b = Scheme::custom(&file.signature_header);
        if let Some(v) = file.name {
            b = b.name(&v);
        }
        if let Some(v) = file.signed {
            b = b.signed(&v);
        }
        if let Some(v) = file.algorithm {
            b = b.algorithm(v.parse()?);
        }
        if let Some(v) = file.encoding {
            b = b.encoding(v.parse()?);
        }
        if let Some(v) = file.prefix {
            b = b.prefix(&v);
        }
        if let Some(v) = file.separator {
            let mut chars = v.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => b = b.separator(c),
                _ => return Err(invalid("separator", "one character")),
            }
        }
        if let Some(v) = file.timestamp_header {
            b = b.timestamp_header(&v);
        }
        if let Some(v) = file.id_header {
            b = b.id_header(&v);
        }
        b.build()
    }
}

/// Builds a custom HMAC [`Scheme`]; from [`Scheme::custom`].
///
/// Defaults: name `custom`, signed `{body}`, `sha256`, `hex`, no prefix,
/// one signature per header, no timestamp, no id.
#[derive(Debug, Clone)]
#[must_use]
pub struct CustomSchemeBuilder {
    name: String,
    signature_header: String,
    template: String,
    algorithm: Algorithm,
    encoding: Encoding,
    prefix: String,
    separator: Option<char>,
    timestamp_header: Option<String>,
    id_header: Option<String>,
}

impl CustomSchemeBuilder {
    pub(crate) fn new(signature_header: &str) -> Self {
        Self {
            name: "custom".to_owned(),
            signature_header: signature_header.to_owned(),
            template: "{body}".to_owned(),
            algorithm: Algorithm::Sha256,
            encoding: Encoding::Hex,
            prefix: String::new(),
            separator: None,
            timestamp_header: None,
            id_header: None,
        }
    }

    /// The scheme's name in metrics, logs and `Verified::scheme` (default
    /// `custom`): lower-case letters, digits, `-` and `_`.
    pub fn name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    /// The signed bytes: a template of literal text and `{id}`,
    /// `{timestamp}`, `{body}` (exactly once); `{{` and `}}` for braces.
    pub fn signed(mut self, template: &str) -> Self {
        template.clone_into(&mut self.template);
        self
    }

    /// The HMAC hash (default `sha256`).
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// How the signature is written (default `hex`).
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Text before each signature, such as `sha256=` (default none).
    pub fn prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// The header may carry several signatures separated by this character
    /// (`,`, `;` or a space); at most the verifier's `max_signatures` are examined.
    pub fn separator(mut self, separator: char) -> Self {
        self.separator = Some(separator);
        self
    }

    /// The header carrying the timestamp (plain decimal Unix seconds). The
    /// template must then sign `{timestamp}`: an unsigned timestamp would
    /// give no replay protection.
    pub fn timestamp_header(mut self, name: &str) -> Self {
        self.timestamp_header = Some(name.to_owned());
        self
    }

    /// The header carrying the event id. Signed when the template has
    /// `{id}`; otherwise reported to the handler but not trusted (the
    /// receiver's dedup keys on the body, as for GitHub).
    pub fn id_header(mut self, name: &str) -> Self {
        self.id_header = Some(name.to_owned());
        self
    }

    /// Check the definition and make the scheme.
    ///
    /// # Errors
    /// [`ConfigError::InvalidCustomScheme`] naming the setting at fault:
    /// an invalid header name, a template without `{body}` or with an
    /// unknown placeholder, `{timestamp}` without a timestamp header (or
    /// the reverse), `{id}` without an id header, a prefix that is not
    /// visible ASCII, an unsupported separator; or more than
    /// [`MAX_CUSTOM_SCHEMES`] distinct definitions in the process.
    pub fn build(self) -> Result<Scheme, ConfigError> {
        let def = self.check()?;
        intern(def).map(Scheme::Custom)
    }

    fn check(self) -> Result<CustomScheme, ConfigError> {
        if self.name.is_empty()
            || self.name.len() > 32
            || !self
                .name
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
        {
            return Err(invalid(
                "name",
                "1 to 32 lower-case letters, digits, '-' or '_'",
            ));
        }
        if crate::Scheme::BUILT_IN
            .iter()
            .any(|s| s.name() == self.name)
        {
            return Err(invalid("name", "the name of a built-in scheme"));
        }
        check_header_name("signature_header", &self.signature_header)?;
        if let Some(h) = &self.timestamp_header {
            check_header_name("timestamp_header", h)?;
        }
        if let Some(h) = &self.id_header {
            check_header_name("id_header", h)?;
        }
        let signed = parse_template(&self.template)?;
        let has = |p: &Part| signed.contains(p);
        if has(&Part::Timestamp) != self.timestamp_header.is_some() {
            return Err(invalid(
                "signed",
                "{timestamp} and timestamp_header go together (an unsigned timestamp protects nothing)",
            ));
        }
        if has(&Part::Id) && self.id_header.is_none() {
            return Err(invalid("signed", "{id} needs an id_header"));
        }
        if self.prefix.len() > MAX_PREFIX_LEN
            || !self.prefix.bytes().all(|b| matches!(b, 0x21..=0x7e))
        {
            return Err(invalid(
                "prefix",
                "at most 32 visible ASCII characters, no spaces",
            ));
        }
        if let Some(sep) = self.separator {
            if !matches!(sep, ',' | ';' | ' ') {
                return Err(invalid("separator", "one of ',', ';' or ' '"));
            }
            if self.prefix.contains(sep) {
                return Err(invalid("prefix", "contains the separator"));
            }
        }
        Ok(CustomScheme {
            name: self.name,
            signature_header: self.signature_header.to_ascii_lowercase(),
            template: self.template,
            signed,
            algorithm: self.algorithm,
            encoding: self.encoding,
            prefix: self.prefix,
            separator: self.separator,
            timestamp_header: self.timestamp_header.map(|h| h.to_ascii_lowercase()),
            id_header: self.id_header.map(|h| h.to_ascii_lowercase()),
        })
    }
}

fn invalid(field: &'static str, reason: &'static str) -> ConfigError {
    ConfigError::InvalidCustomScheme { field, reason }
}

/// An HTTP header name (RFC 9110 token), at most 64 characters.
fn check_header_name(field: &'static str, name: &str) -> Result<(), ConfigError> {
    let token = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            )
    };
    if name.is_empty() || name.len() > MAX_HEADER_NAME_LEN || !name.bytes().all(token) {
        return Err(invalid(field, "not an HTTP header name"));
    }
    Ok(())
}

/// `v0:{timestamp}:{body}` into parts; `{{` / `}}` are literal braces.
pub(crate) fn parse_template(template: &str) -> Result<Vec<Part>, ConfigError> {
    if template.len() > MAX_TEMPLATE_LEN {
        return Err(invalid("signed", "longer than 256 bytes"));
    }
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("{{") {
            literal.push('{');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("}}") {
            literal.push('}');
            rest = after;
        } else if c == '{' {
            let end = rest.find('}').ok_or(invalid("signed", "an unclosed '{'"))?;
            let part = match &rest[1..end] {
                "id" => Part::Id,
                "timestamp" => Part::Timestamp,
                "body" => Part::Body,
                _ => {
                    return Err(invalid(
                        "signed",
                        "unknown placeholder (expected {id}, {timestamp} or {body})",
                    ))
                }
            };
            if parts.contains(&part) {
                return Err(invalid("signed", "a placeholder appears twice"));
            }
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = &rest[end + 1..];
        } else if c == '}' {
            return Err(invalid("signed", "a lone '}' (write '}}')"));
        } else {
            literal.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    if !parts.contains(&Part::Body) {
        return Err(invalid("signed", "must contain {body}"));
    }
    Ok(parts)
}

/// The process-wide set of custom scheme definitions.
static REGISTRY: Mutex<Vec<&'static CustomScheme>> = Mutex::new(Vec::new());

fn intern(def: CustomScheme) -> Result<&'static CustomScheme, ConfigError> {
    // A poisoned lock only means another thread panicked while pushing a
    // reference: the vector is still valid.
    let mut registry = REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(existing) = registry.iter().find(|d| ***d == def) {
        return Ok(existing);
    }
    if registry.iter().any(|d| d.name == def.name) {
        return Err(invalid(
            "name",
            "another custom scheme with this name but another definition exists",
        ));
    }
    if registry.len() >= MAX_CUSTOM_SCHEMES {
        return Err(invalid("name", "too many distinct custom schemes (256)"));
    }
    // Kept for the life of the process (see the module docs): a Scheme is Copy.
    let leaked: &'static CustomScheme = Box::leak(Box::new(def));
    registry.push(leaked);
    Ok(leaked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_reject() {
        assert_eq!(
            parse_template("v0:{timestamp}:{body}").unwrap(),
            vec![
                Part::Literal("v0:".into()),
                Part::Timestamp,
                Part::Literal(":".into()),
                Part::Body
            ]
        );
        assert_eq!(
            parse_template("{{{id}}}{body}").unwrap(),
            vec![
                Part::Literal("{".into()),
                Part::Id,
                Part::Literal("}".into()),
                Part::Body
            ]
        );
        for bad in [
            "",
            "{timestamp}",
            "{body}{body}",
            "{bodx}",
            "{body",
            "}{body}",
            "{}",
        ] {
            assert!(parse_template(bad).is_err(), "{bad:?}");
        }
        assert!(parse_template(&"x".repeat(300)).is_err());
    }

    #[test]
    fn interning_returns_the_same_definition() {
        let a = Scheme::custom("x-sig").name("intern-test").build().unwrap();
        let b = Scheme::custom("X-Sig").name("intern-test").build().unwrap();
        assert_eq!(a, b);
        let (Scheme::Custom(a), Scheme::Custom(b)) = (a, b) else {
            panic!("custom")
        };
        assert!(std::ptr::eq(a, b));
        // Same name, other definition: refused rather than confused.
        assert!(Scheme::custom("x-other")
            .name("intern-test")
            .build()
            .is_err());
    }

    #[test]
    fn definitions_are_checked() {
        let bad = [
            Scheme::custom("bad header"),
            Scheme::custom(""),
            Scheme::custom("x").name("Upper"),
            Scheme::custom("x").name("stripe"),
            Scheme::custom("x").signed("{timestamp}.{body}"),
            Scheme::custom("x").timestamp_header("x-ts"),
            Scheme::custom("x").signed("{id}.{body}"),
            Scheme::custom("x").prefix("a b"),
            Scheme::custom("x").separator('x'),
            Scheme::custom("x").prefix("a,").separator(','),
        ];
        for b in bad {
            assert!(
                matches!(
                    b.clone().build(),
                    Err(ConfigError::InvalidCustomScheme { .. })
                ),
                "{b:?}"
            );
        }
    }
}
