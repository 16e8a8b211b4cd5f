//! PostgreSQL: one way to read a connection URL (with libpq's TLS options),
//! build a pool, and classify errors, shared by the dedup store and the queue.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use hookgate_backend::postgres::{PgUrl, PoolOptions};
//! let url = PgUrl::parse("postgres://hookgate@db.example.com/app?sslmode=verify-full")?;
//! let pool = url.pool(&PoolOptions::default())?;
//! let client = pool.get().await?;
//! client.simple_query("SELECT 1").await?;
//! # Ok(()) }
//! ```
//!
//! # TLS
//! `sslmode` takes libpq's values: `disable` (the default when absent: no
//! TLS), `prefer` and `require` (encrypted, certificate not checked — as in
//! libpq), `verify-ca` (chain checked), `verify-full` (chain and host name
//! checked). `sslrootcert=/path/ca.pem` names the roots to trust (default:
//! the system's); with `require` it upgrades the check to `verify-ca`, as
//! libpq does. Both work in URLs (`?sslmode=..&sslrootcert=..`) and in
//! key=value strings (`host=.. sslmode=verify-full sslrootcert=..`).
//!
//! A server that refuses TLS under `require` or stricter, or a certificate
//! that fails the check, is an error of class [`ErrorClass::Misconfigured`]
//! with a message naming the failed check.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use deadpool_postgres::{
    Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, Timeouts,
};
use tokio_postgres::config::SslMode as DriverSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::tls::{self, Verify};
use crate::{BackendError, ErrorClass};

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// No TLS (the default when the URL says nothing).
    #[default]
    Disable,
    /// TLS when the server offers it; certificate not checked.
    Prefer,
    /// TLS required; certificate checked only if a root certificate is given.
    Require,
    /// TLS required; the certificate must chain to a trusted root.
    VerifyCa,
    /// TLS required; the certificate must chain to a trusted root and name the host.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => Self::Disable,
            // libpq's `allow` tries plain first; TLS "when the server insists" is
            // not something a pool can express, so it is read as `prefer`.
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(BackendError::InvalidUrl(format!(
                    "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )))
            }
        })
    }
}

/// A parsed PostgreSQL connection string: the driver's settings plus the
/// TLS settings the driver does not read itself. `Debug` hides the password.
#[derive(Clone)]
pub struct PgUrl {
    config: tokio_postgres::Config,
    ssl_mode: SslMode,
    root_cert: Option<PathBuf>,
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgUrl")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("user", &self.config.get_user())
            .field("dbname", &self.config.get_dbname())
            .field("ssl_mode", &self.ssl_mode)
            .field("root_cert", &self.root_cert)
            .finish_non_exhaustive()
    }
}

/// How a pool is built.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Most connections open at once.
    pub max_size: usize,
    /// Bound on connecting, on waiting for a free connection, and on checking
    /// a connection before it is handed out.
    pub timeout: Duration,
    /// The server cancels a statement running longer (`statement_timeout`),
    /// so a call the client gave up on does not take effect later. A
    /// `statement_timeout` in the URL's `options` wins over this one.
    pub statement_timeout: Option<Duration>,
    /// Further `-c name=value` settings for every session (e.g. `synchronous_commit=off`).
    pub settings: Vec<(String, String)>,
    /// Check each connection with a round trip before handing it out. Costs
    /// one round trip per checkout; without it a connection whose peer went
    /// silent is handed out again until the kernel gives up on it.
    pub verify_on_checkout: bool,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 16,
            timeout: Duration::from_secs(2),
            statement_timeout: None,
            settings: Vec::new(),
            verify_on_checkout: true,
        }
    }
}

impl PgUrl {
    /// Parse a `postgres://` / `postgresql://` URL or a libpq key=value string.
    ///
    /// # Errors
    /// [`BackendError::InvalidUrl`], without echoing the string (it may hold a password).
    pub fn parse(url: &str) -> Result<Self, BackendError> {
        let (rest, ssl_mode, root_cert) = take_tls_params(url)?;
        let config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
            BackendError::InvalidUrl(format!("not a PostgreSQL connection string: {e}"))
        })?;
        Ok(Self {
            config,
            ssl_mode,
            root_cert,
        })
    }

    /// The driver's settings (host, user, database, ...).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Mutable access to the driver's settings.
    pub fn config_mut(&mut self) -> &mut tokio_postgres::Config {
        &mut self.config
    }

    /// The `sslmode` in force.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// The driver configuration and TLS connector for this URL.
    ///
    /// # Errors
    /// [`BackendError::Tls`] if the root certificates cannot be loaded.
    pub fn connector(&self) -> Result<(tokio_postgres::Config, MakeRustlsConnect), BackendError> {
        let mut config = self.config.clone();
        let verify = match self.ssl_mode {
            SslMode::Disable => {
                config.ssl_mode(DriverSslMode::Disable);
                Verify::None
            }
            SslMode::Prefer => {
                config.ssl_mode(DriverSslMode::Prefer);
                if self.root_cert.is_some() {
                    Verify::Chain
                } else {
                    Verify::None
                }
            }
            SslMode::Require => {
                config.ssl_mode(DriverSslMode::Require);
                if self.root_cert.is_some() {
                    Verify::Chain
                } else {
                    Verify::None
                }
            }
            SslMode::VerifyCa => {
                config.ssl_mode(DriverSslMode::Require);
                Verify::Chain
            }
            SslMode::VerifyFull => {
                config.ssl_mode(DriverSslMode::Require);
                Verify::Full
            }
        };
        let tls = tls::client_config(verify, self.root_cert.as_deref())?;
        Ok((config, MakeRustlsConnect::new(tls)))
    }

    /// A connection pool for this URL. Builds no connection yet.
    ///
    /// # Errors
    /// [`BackendError::Tls`] if the root certificates cannot be loaded;
    /// [`BackendError::InvalidUrl`] if the pool cannot be built.
    pub fn pool(&self, options: &PoolOptions) -> Result<Pool, BackendError> {
        let (mut config, tls) = self.connector()?;
        config.connect_timeout(options.timeout);
        let mut session = Vec::new();
        if let Some(t) = options.statement_timeout {
            session.push(format!("-c statement_timeout={}", t.as_millis().max(1)));
        }
        for (name, value) in &options.settings {
            session.push(format!("-c {name}={value}"));
        }
        // The URL's own `options` come last, so an operator's setting there
        // (say a shorter statement_timeout) wins over these defaults.
        if let Some(user) = config.get_options() {
            session.push(user.to_owned());
        }
        if !session.is_empty() {
            config.options(session.join(" "));
        }
        let recycling_method = if options.verify_on_checkout {
            RecyclingMethod::Verified
        } else {
            RecyclingMethod::Fast
        };
        let manager = Manager::from_config(config, tls, ManagerConfig { recycling_method });
        Pool::builder(manager)
            .max_size(options.max_size)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(options.timeout),
                create: Some(options.timeout),
                recycle: Some(options.timeout),
            })
            .build()
            .map_err(|e| BackendError::InvalidUrl(format!("cannot build the PostgreSQL pool: {e}")))
    }
}

/// Split libpq's TLS parameters (which the driver does not know) off a URL or
/// key=value string.
fn take_tls_params(url: &str) -> Result<(String, SslMode, Option<PathBuf>), BackendError> {
    let mut ssl_mode = SslMode::Disable;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| -> Result<bool, BackendError> {
        match key {
            "sslmode" => {
                ssl_mode = value.parse()?;
                Ok(true)
            }
            "sslrootcert" => {
                root_cert = Some(PathBuf::from(value));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), ssl_mode, root_cert));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(key, &percent_decode(value))? {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((rest, ssl_mode, root_cert))
    } else {
        let mut kept = Vec::new();
        for (key, value, raw) in key_values(url)? {
            if !take(&key, &value)? {
                kept.push(raw);
            }
        }
        Ok((kept.join(" "), ssl_mode, root_cert))
    }
}

/// `key=value` pairs of a libpq string, with libpq's quoting
/// (`key='a value with \' and spaces'`): (key, unquoted value, raw text).
fn key_values(s: &str) -> Result<Vec<(String, String, &str)>, BackendError> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s[start..i].to_owned();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == bytes.len() || bytes[i] != b'=' {
            return Err(BackendError::InvalidUrl(format!(
                "expected `=` after `{key}` in the connection string"
            )));
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = Vec::new();
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => {
                        return Err(BackendError::InvalidUrl(
                            "unterminated quote in the connection string".into(),
                        ))
                    }
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < bytes.len() => {
                        value.push(bytes[i + 1]);
                        i += 2;
                    }
                    Some(&b) => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                value.push(bytes[i]);
                i += 1;
            }
        }
        let value = String::from_utf8(value)
            .map_err(|_| BackendError::InvalidUrl("the connection string is not UTF-8".into()))?;
        out.push((key, value, &s[start..i]));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a driver error means for the caller.
pub fn classify(error: &tokio_postgres::Error) -> ErrorClass {
    match error.as_db_error() {
        Some(db) => classify_sqlstate(db.code().code()),
        // No server error: refused, reset, I/O, connect timeout — or TLS.
        None => {
            if tls::describe_tls_failure(error).is_some() || is_tls_refused(error) {
                ErrorClass::Misconfigured
            } else {
                ErrorClass::Unavailable
            }
        }
    }
}

/// What a pool error means for the caller.
pub fn classify_pool(error: &PoolError) -> ErrorClass {
    match error {
        PoolError::Backend(e) => classify(e),
        PoolError::Timeout(_) | PoolError::Closed => ErrorClass::Unavailable,
        _ => ErrorClass::Misconfigured,
    }
}

/// The class of a SQLSTATE code.
///
/// - Unavailable: `08` connection exceptions; `53300` too many connections;
///   `53400` configuration limit exceeded; `57014` query canceled (a
///   `statement_timeout`); `57P01`–`57P03` shutdown or not accepting
///   connections; `40001`/`40P01` serialization failure and deadlock (try again).
/// - Misconfigured: `28` authentication; `3D000` no such database; `3F000`
///   no such schema; `42P01` no such table; `42703` no such column; `42501`
///   permission denied; `42883` no such function.
/// - Anything else: Other.
pub fn classify_sqlstate(code: &str) -> ErrorClass {
    if code.starts_with("08")
        || matches!(
            code,
            "53300" | "53400" | "57014" | "57P01" | "57P02" | "57P03" | "40001" | "40P01"
        )
    {
        ErrorClass::Unavailable
    } else if code.starts_with("28")
        || matches!(
            code,
            "3D000" | "3F000" | "42P01" | "42703" | "42501" | "42883"
        )
    {
        ErrorClass::Misconfigured
    } else {
        ErrorClass::Other
    }
}

/// A one-line description of a driver error for logs and CLI messages:
/// which TLS check failed, else the driver's own message. Never includes
/// the connection string.
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(tls) = tls::describe_tls_failure(error) {
        return tls;
    }
    if is_tls_refused(error) {
        return "the server does not accept TLS connections, but sslmode requires TLS".to_owned();
    }
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            // The driver's text often repeats its cause already.
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(s) = source {
                let cause = s.to_string();
                if !text.contains(&cause) {
                    text.push_str(": ");
                    text.push_str(&cause);
                }
                source = s.source();
            }
            text
        }
    }
}

fn is_tls_refused(error: &tokio_postgres::Error) -> bool {
    // tokio-postgres reports a server that answers `N` to SSLRequest under
    // `require` as this message; it has no public error kind for it.
    error.to_string().contains("server does not support TLS")
}

/// Whether `s` is a PostgreSQL identifier this project creates unquoted:
/// an ASCII letter or `_`, then letters, digits or `_`, at most 63 bytes
/// (the server's `NAMEDATALEN - 1`). Upper-case letters are allowed and
/// folded to lower case by the server, as for any unquoted name.
pub fn valid_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && s.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_off_urls() {
        let url = PgUrl::parse("postgres://u:p@h:5433/db?sslmode=verify-full&sslrootcert=/tmp/ca%20x.pem&application_name=a").unwrap();
        assert_eq!(url.ssl_mode(), SslMode::VerifyFull);
        assert_eq!(
            url.root_cert.as_deref(),
            Some(std::path::Path::new("/tmp/ca x.pem"))
        );
        assert_eq!(url.config().get_application_name(), Some("a"));
        assert_eq!(url.config().get_ports(), &[5433]);
        let plain = PgUrl::parse("postgres://postgres@127.0.0.1/test").unwrap();
        assert_eq!(plain.ssl_mode(), SslMode::Disable);
        assert!(plain.root_cert.is_none());
    }

    #[test]
    fn tls_parameters_are_taken_off_key_value_strings() {
        let url = PgUrl::parse("host=127.0.0.1 user=postgres password='a b\\'c' sslmode=require sslrootcert='/x y/ca.pem' dbname=test").unwrap();
        assert_eq!(url.ssl_mode(), SslMode::Require);
        assert_eq!(
            url.root_cert.as_deref(),
            Some(std::path::Path::new("/x y/ca.pem"))
        );
        assert_eq!(url.config().get_password(), Some(&b"a b'c"[..]));
        assert_eq!(url.config().get_dbname(), Some("test"));
    }

    #[test]
    fn bad_strings_are_typed_errors_that_hide_the_password() {
        for bad in [
            "postgres://u:hunter2@h/db?sslmode=sometimes",
            "host=h password=hunter2 sslmode=maybe",
            "host=h password='hunter2",
            "host=h password",
        ] {
            let err = PgUrl::parse(bad).unwrap_err();
            assert!(matches!(err, BackendError::InvalidUrl(_)), "{bad}: {err:?}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let debug = format!("{:?}", PgUrl::parse("postgres://u:hunter2@h/db").unwrap());
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn sqlstates_are_classified() {
        for code in ["08006", "53300", "57014", "57P01", "40001"] {
            assert_eq!(classify_sqlstate(code), ErrorClass::Unavailable, "{code}");
        }
        for code in ["28P01", "3D000", "42P01", "42703", "42501"] {
            assert_eq!(classify_sqlstate(code), ErrorClass::Misconfigured, "{code}");
        }
        assert_eq!(classify_sqlstate("23505"), ErrorClass::Other);
    }

    #[test]
    fn identifiers() {
        assert!(valid_identifier("hookgate_dedup"));
        assert!(valid_identifier("_x9"));
        assert!(valid_identifier(&"a".repeat(63)));
        assert!(!valid_identifier(&"a".repeat(64)));
        for bad in ["", "9a", "a-b", "a b", "a;drop", "é"] {
            assert!(!valid_identifier(bad), "{bad}");
        }
    }
}
