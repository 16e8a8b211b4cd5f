//! Masking credentials in URLs, DSNs and free text before they are shown.
//!
//! Three functions, for three kinds of strings:
//!
//! - [`url`]: an endpoint URL for records, logs and `Debug`. The whole
//!   userinfo, every query value and the fragment are masked; scheme, host,
//!   port and path stay.
//! - [`dsn`]: a store connection string (Postgres or Redis) for messages. The
//!   user name stays, the password goes, in every form: URL DSNs (a password
//!   containing `@` included: the host starts after the **last** `@` of the
//!   authority), key=value Postgres DSNs (`host=db password=secret`, quoted
//!   values too) and query parameters (`?password=`). Only parameters known to
//!   be harmless (`sslmode`, `dbname`, `connect_timeout`, ...) keep their
//!   values; every other value is masked.
//! - [`text`]: any message (an error chain, say) that may quote URLs or
//!   DSNs: every `scheme://` URL in it is masked as by [`dsn`], and the value
//!   of every `key=value` whose key names a credential (`password`, `token`,
//!   `secret`, `apikey`, ...) is masked.
//!
//! Masking never parses strictly: malformed input is masked too (errors are
//! mostly about malformed input).
//!
//! ```
//! use hookgate_sender::redact;
//! assert_eq!(
//!     redact::url("https://user:pw@example.com/hook?token=abc#frag"),
//!     "https://***@example.com/hook?token=***#***"
//! );
//! assert_eq!(
//!     redact::dsn("postgres://app:p@ss@db.internal:5432/app?sslmode=require&password=x"),
//!     "postgres://app:***@db.internal:5432/app?sslmode=require&password=***"
//! );
//! assert_eq!(
//!     redact::dsn("host=db user=app password='s3 cret' dbname=app"),
//!     "host=db user=app password=*** dbname=app"
//! );
//! assert_eq!(
//!     redact::text("cannot open store redis://:hunter2@cache:6379 (password=hunter2)"),
//!     "cannot open store redis://:***@cache:6379 (password=***"
//! );
//! ```

/// What replaces a masked part.
const MASK: &str = "***";

/// Connection parameters whose values are shown (everything else is masked).
const HARMLESS_KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "db",
    "user",
    "username",
    "sslmode",
    "sslnegotiation",
    "connect_timeout",
    "application_name",
    "target_session_attrs",
    "load_balance_hosts",
    "channel_binding",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "protocol",
    "client_encoding",
];

/// Words that make a key a credential in free text.
const CREDENTIAL_WORDS: &[&str] = &[
    "pass", "pwd", "secret", "token", "key", "auth", "cred", "sig", "session", "cookie",
];

/// An endpoint URL with its userinfo, query values and fragment masked:
/// `https://user:pw@host/p?token=x` becomes `https://***@host/p?token=***`.
#[must_use]
pub fn url(url: &str) -> String {
    mask_url(url, Mode::Endpoint, &mut Vec::new())
}

/// A store DSN (URL or key=value form) with its password masked and the
/// values of all but [harmless](self) parameters masked.
#[must_use]
pub fn dsn(dsn: &str) -> String {
    mask_dsn(dsn, &mut Vec::new())
}

/// The credential values [`dsn`] masks in `dsn` (a password, a masked
/// parameter's value, unquoted), so that a program can also mask them where
/// they show up on their own, e.g. in a driver's error message.
///
/// ```
/// use hookgate_sender::redact;
/// assert_eq!(redact::credentials("postgres://app:p@ss@db/x"), ["p@ss"]);
/// assert_eq!(redact::credentials("host=db password='a b'"), ["a b"]);
/// ```
#[must_use]
pub fn credentials(dsn: &str) -> Vec<String> {
    let mut found = Vec::new();
    mask_dsn(dsn, &mut found);
    found.retain(|s| !s.is_empty());
    found
}

fn mask_dsn(dsn: &str, found: &mut Vec<String>) -> String {
    if dsn.contains("://") {
        mask_url(dsn, Mode::Dsn, found)
    } else if dsn.contains('=') {
        mask_key_values(dsn, |key| !is_harmless(key), found)
    } else {
        dsn.to_owned()
    }
}

/// Free text with every URL masked as by [`dsn`] and the value of every
/// `key=value` whose key names a credential masked.
#[must_use]
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        // The URL starts at its scheme.
        let start = rest[..sep]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .last()
            .map_or(sep, |(i, _)| i);
        // And ends at white space or a quote.
        let end = rest[sep..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .map_or(rest.len(), |i| sep + i);
        out.push_str(&mask_key_values(
            &rest[..start],
            is_credential,
            &mut Vec::new(),
        ));
        out.push_str(&mask_url(&rest[start..end], Mode::Dsn, &mut Vec::new()));
        rest = &rest[end..];
    }
    out.push_str(&mask_key_values(rest, is_credential, &mut Vec::new()));
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Mask the whole userinfo and every query value and the fragment.
    Endpoint,
    /// Keep the user name; mask the password and non-harmless query values.
    Dsn,
}

fn is_harmless(key: &str) -> bool {
    HARMLESS_KEYS
        .iter()
        .any(|k| k.eq_ignore_ascii_case(key.trim()))
}

fn is_credential(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    CREDENTIAL_WORDS.iter().any(|w| key.contains(w))
}

/// Mask a URL-shaped string without requiring it to parse; push what was
/// masked onto `found`.
fn mask_url(s: &str, mode: Mode, found: &mut Vec<String>) -> String {
    let Some(sep) = s.find("://") else {
        return s.to_owned();
    };
    let (scheme, rest) = (&s[..sep + 3], &s[sep + 3..]);
    let authority_end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    // The host starts after the last `@` of the authority (a raw `@` in a
    // password is common). A raw `/` in a password would end the authority
    // early: when the authority has no `@` but the part before the query has
    // one after a `:`, mask up to that `@` too (over-masking beats leaking).
    let at = rest[..authority_end].rfind('@').or_else(|| {
        let before_query = rest.find(['?', '#']).unwrap_or(rest.len());
        let at = rest[..before_query].rfind('@')?;
        rest[..at].contains(':').then_some(at)
    });
    let mut out = String::with_capacity(s.len());
    out.push_str(scheme);
    let after_userinfo = match at {
        Some(at) => {
            let userinfo = &rest[..at];
            match mode {
                Mode::Endpoint => {
                    out.push_str(MASK);
                    found.push(userinfo.to_owned());
                }
                Mode::Dsn => match userinfo.split_once(':') {
                    Some((user, password)) => {
                        found.push(password.to_owned());
                        out.push_str(user);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    // A lone name: Postgres' user name, but Redis reads a
                    // lone `redis://secret@host` as... a user name too. Keep it.
                    None => out.push_str(userinfo),
                },
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    let (before_fragment, fragment) = match after_userinfo.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (after_userinfo, None),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let parts: Vec<String> = query
                .split('&')
                .map(|part| match part.split_once('=') {
                    Some((k, _)) if mode == Mode::Dsn && is_harmless(k) => part.to_owned(),
                    Some((k, v)) => {
                        found.push(v.to_owned());
                        format!("{k}={MASK}")
                    }
                    None if part.is_empty() => String::new(),
                    // A bare `?token` may be the secret itself.
                    None => {
                        found.push(part.to_owned());
                        MASK.to_owned()
                    }
                })
                .collect();
            out.push_str(&parts.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    if let Some(fragment) = fragment {
        out.push('#');
        if !fragment.is_empty() {
            found.push(fragment.to_owned());
            out.push_str(MASK);
        }
    }
    out
}

/// Mask the values of `key=value` pairs whose key `mask` selects. Values are
/// `'quoted'` (with `\` escapes, as libpq writes them) or run to the next
/// white space. Push the masked values (unquoted) onto `found`.
fn mask_key_values(s: &str, mask: impl Fn(&str) -> bool, found: &mut Vec<String>) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'=' {
            i += 1;
            continue;
        }
        // The key: the word before `=` (spaces allowed in between).
        let mut key_end = i;
        while key_end > 0 && bytes[key_end - 1] == b' ' {
            key_end -= 1;
        }
        let mut key_start = key_end;
        while key_start > 0
            && (bytes[key_start - 1].is_ascii_alphanumeric()
                || matches!(bytes[key_start - 1], b'_' | b'-' | b'.'))
        {
            key_start -= 1;
        }
        let key = &s[key_start..key_end];
        // The value.
        let mut v = i + 1;
        while v < bytes.len() && bytes[v] == b' ' {
            v += 1;
        }
        let value_end = if bytes.get(v) == Some(&b'\'') {
            let mut j = v + 1;
            while j < bytes.len() && bytes[j] != b'\'' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(bytes.len())
        } else {
            let mut j = v;
            while j < bytes.len() && !bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            j
        };
        if !key.is_empty() && value_end > v && mask(key) {
            let value = &s[v..value_end];
            found.push(match value.strip_prefix('\'') {
                Some(quoted) => {
                    let quoted = quoted.strip_suffix('\'').unwrap_or(quoted);
                    quoted
                        .replace("\\\\", "\u{0}")
                        .replace('\\', "")
                        .replace('\u{0}', "\\")
                }
                None => value.to_owned(),
            });
            out.push_str(&s[copied..v]);
            out.push_str(MASK);
            copied = value_end;
        }
        i = value_end.max(i + 1);
    }
    out.push_str(&s[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        for (input, want) in [
            ("https://example.com/hook", "https://example.com/hook"),
            ("https://u:pw@example.com/h", "https://***@example.com/h"),
            ("https://apikey@example.com/h", "https://***@example.com/h"),
            (
                "https://u:p@ss@example.com:8443/h",
                "https://***@example.com:8443/h",
            ),
            ("http://h/p?token=SECRET", "http://h/p?token=***"),
            (
                "http://h/p?a=1&sig=SECRET&b",
                "http://h/p?a=***&sig=***&***",
            ),
            ("http://h/p#SECRET", "http://h/p#***"),
            ("http://[::1]:80/p?x=y#z", "http://[::1]:80/p?x=***#***"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(url(input), want, "{input}");
        }
    }

    #[test]
    fn url_dsns() {
        for (input, want) in [
            (
                "postgres://u:pw@host:5432/db",
                "postgres://u:***@host:5432/db",
            ),
            (
                "postgres://postgres@127.0.0.1/test",
                "postgres://postgres@127.0.0.1/test",
            ),
            // A password containing `@`: the host follows the last `@`.
            (
                "postgres://u:p@ss@w@rd@db:5432/x",
                "postgres://u:***@db:5432/x",
            ),
            // A password containing `/` (not percent-encoded).
            ("postgres://u:pa/ss@db/x", "postgres://u:***@db/x"),
            (
                "postgresql://db/x?user=u&password=SECRET&sslmode=require",
                "postgresql://db/x?user=u&password=***&sslmode=require",
            ),
            ("redis://:SECRET@cache:6379/0", "redis://:***@cache:6379/0"),
            (
                "rediss://default:SECRET@cache",
                "rediss://default:***@cache",
            ),
            (
                "redis+unix:///run/redis.sock?db=1&pass=SECRET",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("memory", "memory"),
        ] {
            assert_eq!(dsn(input), want, "{input}");
        }
    }

    #[test]
    fn key_value_dsns() {
        for (input, want) in [
            (
                "host=127.0.0.1 user=app password=SECRET dbname=test",
                "host=127.0.0.1 user=app password=*** dbname=test",
            ),
            ("password = SECRET host=db", "password = *** host=db"),
            (
                r"host=db password='it\'s SECRET' sslmode=require",
                "host=db password=*** sslmode=require",
            ),
            ("host=db sslpassword=SECRET", "host=db sslpassword=***"),
            ("host=db passfile=/secret/path", "host=db passfile=***"),
            ("host=db password=", "host=db password="),
        ] {
            assert_eq!(dsn(input), want, "{input}");
            assert!(!dsn(input).contains("SECRET"), "{input}");
        }
    }

    #[test]
    fn free_text() {
        for (input, want) in [
            (
                "cannot open store postgres://u:p@ss@db/x: connection refused",
                "cannot open store postgres://u:***@db/x: connection refused",
            ),
            (
                "unsupported store URL scheme \"host=db password=SECRET\"",
                "unsupported store URL scheme \"host=db password=***",
            ),
            (
                "error at \"https://u:SECRET@h/p?token=SECRET\" and api_key=SECRET",
                "error at \"https://u:***@h/p?token=***\" and api_key=***",
            ),
            ("nothing secret=", "nothing secret="),
            ("no credentials here: a=b", "no credentials here: a=b"),
        ] {
            assert_eq!(text(input), want, "{input}");
        }
    }

    #[test]
    fn credentials_are_what_is_masked() {
        assert_eq!(credentials("postgres://u:p@ss@db/x"), ["p@ss"]);
        assert_eq!(
            credentials("postgres://postgres@db/x?sslmode=require"),
            [""; 0]
        );
        assert_eq!(credentials("redis://:pw@h/0?password=q&db=1"), ["pw", "q"]);
        assert_eq!(
            credentials(r"host=db password='it\'s s\\ecret' user=u"),
            [r"it's s\ecret"]
        );
        assert_eq!(credentials("memory"), [""; 0]);
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "",
            "=",
            "==",
            "'",
            "password='",
            "password='\\",
            "://",
            "a://@",
            "a://?&=#",
            "é=é",
            "pass=é",
            "x://é:é@é/é?é=é#é",
        ] {
            let _ = (url(s), dsn(s), text(s));
        }
    }
}
