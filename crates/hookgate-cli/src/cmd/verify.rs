//! `hookgate verify`: check a signed body the way a receiver would.
//!
//! ```text
//! $ hookgate verify --scheme standard --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \
//!       -H 'webhook-id: msg_p5jXN8AQM9LWM0D4loKWxJek' -H 'webhook-timestamp: 1614265330' \
//!       -H 'webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=' \
//!       --body-file body.json --now 1614265330
//! msg_p5jXN8AQM9LWM0D4loKWxJek
//! ```
//!
//! Valid: exit 0; the event id goes to stdout (or `no event id` when the
//! scheme has none, as with Slack), a summary to stderr. Invalid: exit 1 and
//! `hookgate: rejected (<kind>): <reason>` on stderr, where kind is
//! `malformed_webhook`, `timestamp_out_of_tolerance` or `invalid_signature`.
//! Usage errors (bad flags, unreadable files, invalid secrets): exit 2.
//!
//! Headers come from `--header 'Name: value'` (repeatable) and/or
//! `--headers-file` (one `Name: value` per line, as `hookgate sign` prints
//! them), so `hookgate sign ... | hookgate verify ... --headers-file -` works.

use std::{io::Read as _, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{bail, Context as _};
use hookgate_core::{unix_now, Verifier};

use super::sign::read_body_file;

/// Arguments of `hookgate verify`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  hookgate verify --scheme github --secret s --header 'X-Hub-Signature-256: sha256=...' --body-file event.json
  hookgate sign --scheme standard --secret whsec_... --body-file e.json | hookgate verify --scheme standard --secret whsec_... --headers-file - --body-file e.json")]
pub(crate) struct Args {
    #[command(flatten)]
    key: super::SchemeArgs,
    /// A received header, `Name: value`. Repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// File of received headers, one `Name: value` per line, or `-` for stdin.
    #[arg(long, value_name = "FILE|-")]
    headers_file: Option<PathBuf>,
    /// File holding the exact body bytes received, or `-` for stdin.
    #[arg(long, value_name = "FILE|-")]
    body_file: PathBuf,
    /// Verify as of this Unix time in seconds (default: now).
    #[arg(long, value_name = "UNIX")]
    now: Option<i64>,
    /// Timestamp tolerance in seconds, either way.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    tolerance: u64,
}

/// Longest `--headers-file` read, so a runaway pipe cannot exhaust memory.
const MAX_HEADERS_FILE: u64 = 1024 * 1024;

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let scheme = args.key.scheme()?;
    let verifier = Verifier::from_secret_strings(scheme, &args.key.secrets)
        .with_context(|| format!("invalid --secret for scheme {scheme}"))?
        .with_tolerance(Duration::from_secs(args.tolerance));

    let stdin_headers = args
        .headers_file
        .as_deref()
        .is_some_and(|p| p.as_os_str() == "-");
    if stdin_headers && args.body_file.as_os_str() == "-" {
        bail!("--headers-file and --body-file cannot both read stdin");
    }
    let mut headers = Vec::new();
    for line in &args.headers {
        headers.push(parse_header_line(line).with_context(|| format!("--header {line:?}"))?);
    }
    if let Some(path) = &args.headers_file {
        let text = read_headers_file(path)?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            headers.push(
                parse_header_line(line)
                    .with_context(|| format!("--headers-file line {}", n + 1))?,
            );
        }
    }
    let body = read_body_file(&args.body_file)?;
    let now = args.now.unwrap_or_else(unix_now);

    match verifier.verify_at(&headers[..], &body, now) {
        Ok(verified) => {
            match &verified.id {
                Some(id) => println!("{id}"),
                None => println!("no event id"),
            }
            let mut summary = format!(
                "hookgate: valid {scheme} webhook, signed with secret #{}",
                verified.key_index + 1
            );
            if let Some(ts) = verified.timestamp {
                summary.push_str(&format!(" at {ts}"));
            }
            if verified.id.is_some() && !verifier.id_is_signed() {
                summary.push_str(" (the id is not covered by the signature)");
            }
            eprintln!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("hookgate: rejected ({}): {e}", e.kind());
            Ok(ExitCode::from(1))
        }
    }
}

/// `Name: value` → (name, value), both trimmed. The value may be anything;
/// the verifier judges it.
fn parse_header_line(line: &str) -> anyhow::Result<(String, String)> {
    let Some((name, value)) = line.split_once(':') else {
        bail!("expected `Name: value`");
    };
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("header name must be visible ASCII without spaces");
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

fn read_headers_file(path: &std::path::Path) -> anyhow::Result<String> {
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_HEADERS_FILE + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_HEADERS_FILE + 1).read_to_string(&mut text))
    };
    read.with_context(|| format!("reading --headers-file {}", path.display()))?;
    if text.len() as u64 > MAX_HEADERS_FILE {
        bail!("--headers-file is larger than {MAX_HEADERS_FILE} bytes");
    }
    Ok(text)
}
