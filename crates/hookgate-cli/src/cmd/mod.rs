//! One module per subcommand; each has `Args` (clap) and `run`.
//!
//! `run` returns `Ok(ExitCode)` for outcomes (0 ok, 1 the operation failed) and
//! `Err` for usage/configuration problems, which `main` prints and exits 2.

pub(crate) mod demo;
pub(crate) mod dlq;
pub(crate) mod endpoint;
pub(crate) mod enqueue;
pub(crate) mod forward;
pub(crate) mod queue;
pub(crate) mod send;
pub(crate) mod serve;
pub(crate) mod sign;
pub(crate) mod verify;
pub(crate) mod worker;

use hookgate_core::Scheme;

/// `message` fit to print: every URL and DSN in it masked
/// ([`redact::text`](hookgate_sender::redact::text)), and every credential
/// this invocation was given (`--secret` values, `HOOKGATE_SECRET`, the
/// passwords and parameters of any URL or DSN argument, `HOOKGATE_STORE`)
/// masked wherever it appears on its own, e.g. quoted by a driver's error.
pub(crate) fn scrub(message: &str) -> String {
    let args = std::env::args_os().map(|a| a.to_string_lossy().into_owned());
    let store = std::env::var("HOOKGATE_STORE").ok();
    // A secret from the environment is masked as if given with `--secret`.
    let secret = std::env::var("HOOKGATE_SECRET")
        .ok()
        .map(|s| ["--secret".to_owned(), s]);
    scrub_with(
        message,
        args.chain(store).chain(secret.into_iter().flatten()),
    )
}

fn scrub_with(message: &str, invocation: impl IntoIterator<Item = String>) -> String {
    let mut credentials = Vec::new();
    let mut after_secret_flag = false;
    for arg in invocation {
        if after_secret_flag {
            credentials.push(arg.clone());
        }
        after_secret_flag = arg == "--secret";
        if let Some(value) = arg.strip_prefix("--secret=") {
            credentials.push(value.to_owned());
        }
        credentials.extend(hookgate_sender::redact::credentials(&arg));
    }
    // Longest first, so a credential containing another is masked whole.
    credentials.sort_by_key(|c| std::cmp::Reverse(c.len()));
    let mut out = hookgate_sender::redact::text(message);
    for c in credentials.iter().filter(|c| c.len() >= 3) {
        out = out.replace(c.as_str(), "***");
    }
    out
}

/// `--scheme` and `--secret`, spelled the same in every subcommand.
#[derive(clap::Args)]
pub(crate) struct SchemeArgs {
    /// Signature scheme: standard (also v1a ed25519), stripe, github, slack,
    /// shopify, discord (ed25519), or custom (any HMAC provider: with
    /// --sig-header and the flags below, or --scheme-file).
    #[arg(
        id = "scheme",
        long = "scheme",
        value_name = "SCHEME",
        default_value = "standard"
    )]
    scheme_choice: SchemeName,
    #[command(flatten)]
    custom: Box<CustomArgs>,
    /// Secret as the provider gives it: `whsec_...` (HMAC), `whsk_...`
    /// (ed25519 signing key) or `whpk_...` (ed25519 public key, verifying
    /// only) for standard; the application's hex public key (or whpk_/whsk_)
    /// for discord; the text itself for the others. Repeat for rotation:
    /// receiving accepts a signature by any of them; sending signs with each
    /// where the scheme carries several signatures (standard, stripe, custom
    /// with --separator), else with the first.
    #[arg(
        long = "secret",
        value_name = "SECRET",
        required = true,
        env = "HOOKGATE_SECRET",
        hide_env_values = true
    )]
    pub(crate) secrets: Vec<String>,
}

/// A `--scheme` value: a built-in scheme, or `custom`.
#[derive(Debug, Clone, Copy)]
enum SchemeName {
    BuiltIn(Scheme),
    Custom,
}

impl std::str::FromStr for SchemeName {
    type Err = hookgate_core::ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("custom") {
            return Ok(Self::Custom);
        }
        s.parse().map(Self::BuiltIn)
    }
}

/// `--scheme custom`: any HMAC provider, described by flags or a TOML file.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CustomArgs {
    /// custom: the header carrying the signature.
    #[arg(
        long,
        value_name = "NAME",
        help_heading = "Custom scheme (--scheme custom)"
    )]
    sig_header: Option<String>,
    /// custom: the signed bytes, a template over {id}, {timestamp} and
    /// {body} (default `{body}`), e.g. `{timestamp}.{body}`.
    #[arg(
        long,
        value_name = "TEMPLATE",
        help_heading = "Custom scheme (--scheme custom)"
    )]
    signed: Option<String>,
    /// custom: signature encoding, hex or base64 (default hex).
    #[arg(
        long,
        value_name = "ENCODING",
        help_heading = "Custom scheme (--scheme custom)"
    )]
    encoding: Option<String>,
    /// custom: HMAC hash, sha256, sha1 or sha512 (default sha256).
    #[arg(
        long,
        value_name = "HASH",
        help_heading = "Custom scheme (--scheme custom)"
    )]
    algorithm: Option<String>,
    /// custom: text before the signature, e.g. `sha256=` (`--prefix` already
    /// names serve's --namespace).
    #[arg(
        long,
        value_name = "TEXT",
        help_heading = "Custom scheme (--scheme custom)"
    )]
    sig_prefix: Option<String>,
    /// custom: several signatures in one header, separated by this
    /// character (`,`, `;` or a space).
    #[arg(
        long,
        value_name = "CHAR",
        help_heading = "Custom scheme (--scheme custom)"
    )]
    separator: Option<char>,
    /// custom: the header carrying the (signed) Unix timestamp; the
    /// template must contain {timestamp}.
    #[arg(
        long,
        value_name = "NAME",
        help_heading = "Custom scheme (--scheme custom)"
    )]
    timestamp_header: Option<String>,
    /// custom: the header carrying the event id (signed if the template
    /// contains {id}; otherwise dedup keys on the body).
    #[arg(
        long,
        value_name = "NAME",
        help_heading = "Custom scheme (--scheme custom)"
    )]
    id_header: Option<String>,
    /// custom: the scheme's name in logs, metrics and output (default custom).
    #[arg(
        long,
        value_name = "NAME",
        help_heading = "Custom scheme (--scheme custom)"
    )]
    scheme_name: Option<String>,
    /// custom: read the definition from this TOML file instead of the
    /// flags (keys: name, signature_header, signed, algorithm, encoding,
    /// prefix, separator, timestamp_header, id_header).
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Custom scheme (--scheme custom)"
    )]
    scheme_file: Option<std::path::PathBuf>,
}

impl CustomArgs {
    fn any_flag(&self) -> bool {
        self.sig_header.is_some()
            || self.signed.is_some()
            || self.encoding.is_some()
            || self.algorithm.is_some()
            || self.sig_prefix.is_some()
            || self.separator.is_some()
            || self.timestamp_header.is_some()
            || self.id_header.is_some()
            || self.scheme_name.is_some()
    }

    fn build(&self) -> anyhow::Result<Scheme> {
        use anyhow::Context as _;
        if let Some(path) = &self.scheme_file {
            if self.any_flag() {
                anyhow::bail!("--scheme-file and the custom scheme flags (--sig-header, ...) exclude each other");
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --scheme-file {}", path.display()))?;
            return hookgate_core::scheme::CustomScheme::from_toml(&text)
                .with_context(|| format!("--scheme-file {}", path.display()));
        }
        let header = self
            .sig_header
            .as_deref()
            .context("--scheme custom needs --sig-header NAME (or --scheme-file FILE)")?;
        let mut b = Scheme::custom(header);
        if let Some(v) = &self.scheme_name {
            b = b.name(v);
        }
        if let Some(v) = &self.signed {
            b = b.signed(v);
        }
        if let Some(v) = &self.encoding {
            b = b.encoding(v.parse().context("--encoding")?);
        }
        if let Some(v) = &self.algorithm {
            b = b.algorithm(v.parse().context("--algorithm")?);
        }
        if let Some(v) = &self.sig_prefix {
            b = b.prefix(v);
        }
        if let Some(v) = self.separator {
            b = b.separator(v);
        }
        if let Some(v) = &self.timestamp_header {
            b = b.timestamp_header(v);
        }
        if let Some(v) = &self.id_header {
            b = b.id_header(v);
        }
        Ok(b.build()?)
    }
}

impl SchemeArgs {
    /// The scheme: a built-in one, or the custom one the flags or the file describe.
    ///
    /// # Errors
    /// An invalid custom definition, custom flags without `--scheme custom`.
    pub(crate) fn scheme(&self) -> anyhow::Result<Scheme> {
        match self.scheme_choice {
            SchemeName::BuiltIn(scheme) => {
                if self.custom.any_flag() || self.custom.scheme_file.is_some() {
                    anyhow::bail!(
                        "--sig-header, --signed, --scheme-file and the other custom scheme flags need --scheme custom"
                    );
                }
                Ok(scheme)
            }
            SchemeName::Custom => self.custom.build(),
        }
    }

    /// [`scheme`](Self::scheme) for commands that store the endpoint's
    /// scheme by name (send, endpoint): built-in schemes only.
    pub(crate) fn stored_scheme(&self) -> anyhow::Result<Scheme> {
        match self.scheme_choice {
            SchemeName::Custom => anyhow::bail!(
                "--scheme custom is for sign, verify and serve: endpoints store their scheme by name, and a custom one has none the queue knows"
            ),
            SchemeName::BuiltIn(_) => self.scheme(),
        }
    }
}

impl std::fmt::Debug for SchemeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemeArgs")
            .field("scheme", &self.scheme_choice)
            .field("custom", &self.custom)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .finish()
    }
}

/// An error and its causes on one line, `: `-separated, leaving out a cause
/// whose text the line already holds (drivers often repeat their cause in
/// their own message).
pub(crate) fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Colour in log output only on a terminal, and never with `NO_COLOR` set
/// (<https://no-color.org>).
pub(crate) fn colour() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none()
}

/// A duration flag: humantime (`500ms`, `30s`, `5m`, `72h`, `1h 30m`) or a
/// bare number of seconds (`300`).
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (expected e.g. 300, 30s, 5m, 72h)"))
}

/// A listen address: `HOST:PORT`, `:PORT` or a bare `PORT` (both on
/// 127.0.0.1), or `localhost:PORT`.
pub(crate) fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    let text = text.trim();
    if let Ok(port) = text.trim_start_matches(':').parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .map_err(|e| format!("{e} (expected e.g. 127.0.0.1:8080, localhost:8080 or 8080)"))?
        .find(std::net::SocketAddr::is_ipv4)
        .or_else(|| text.to_socket_addrs().ok()?.next())
        .ok_or_else(|| "no address found (expected e.g. 127.0.0.1:8080)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::scrub_with;

    #[test]
    fn errors_print_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let driver =
            anyhow::Error::new(io).context("error connecting to server: connection refused");
        let e = driver
            .context("postgres: connect")
            .context("cannot open the Postgres queue");
        assert_eq!(
            super::one_line(&e),
            "cannot open the Postgres queue: postgres: connect: error connecting to server: connection refused"
        );
    }

    #[test]
    fn durations_take_seconds_or_humantime() {
        use std::time::Duration;
        assert_eq!(super::parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(super::parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(
            super::parse_duration("500ms"),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(
            super::parse_duration("72h"),
            Ok(Duration::from_secs(72 * 3600))
        );
        assert!(super::parse_duration("soon").is_err());
        assert!(super::parse_duration("-1").is_err());
    }

    #[test]
    fn listen_addresses_in_every_form() {
        let local = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        assert_eq!(super::parse_listen("8080"), Ok(local(8080)));
        assert_eq!(super::parse_listen(":8080"), Ok(local(8080)));
        assert_eq!(super::parse_listen("127.0.0.1:8080"), Ok(local(8080)));
        assert_eq!(super::parse_listen("localhost:8080"), Ok(local(8080)));
        assert_eq!(
            super::parse_listen("[::1]:9"),
            Ok("[::1]:9".parse().unwrap())
        );
        assert!(super::parse_listen("nowhere").is_err());
    }

    fn scrub(message: &str, args: &[&str]) -> String {
        scrub_with(message, args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn masks_urls_dsns_and_given_credentials() {
        let args = [
            "hookgate",
            "dlq",
            "list",
            "--store",
            "host=db user=app password=kv_secret",
            "--secret",
            "whsec_abc",
        ];
        for (message, want) in [
            (
                "cannot open store postgres://u:p@ss@db/x: refused",
                "cannot open store postgres://u:***@db/x: refused",
            ),
            (
                "unsupported store URL scheme \"host=db user=app password=kv_secret\"",
                "unsupported store URL scheme \"host=db user=app password=***",
            ),
            // A driver quoting the bare password, and a secret on its own.
            (
                "authentication failed (kv_secret); key whsec_abc",
                "authentication failed (***); key ***",
            ),
            ("plain message", "plain message"),
        ] {
            assert_eq!(scrub(message, &args), want);
        }
        assert_eq!(
            scrub("x --secret=s3cr3t", &["hookgate", "--secret=s3cr3t"]),
            "x --secret=***"
        );
    }
}
