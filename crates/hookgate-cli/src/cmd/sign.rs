//! `hookgate sign`: print the headers that sign a body, one `Name: value`
//! per line, ready for `curl -H`.
//!
//! ```text
//! $ hookgate sign --scheme standard --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \
//!       --id msg_p5jXN8AQM9LWM0D4loKWxJek --timestamp 1614265330 --body-file body.json
//! webhook-id: msg_p5jXN8AQM9LWM0D4loKWxJek
//! webhook-timestamp: 1614265330
//! webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=
//! Content-Type: application/json
//! ```
//!
//! Without `--id` a `msg_...` id is generated; without `--timestamp` the
//! current time is used. Stripe carries its event id in the JSON body and
//! Slack has none, so `--id` is not printed for them. With several
//! `--secret`s, Standard Webhooks and Stripe get one signature per secret
//! (rotation); the other schemes are signed with the first. When the body is
//! JSON, a `Content-Type: application/json` line is added as a convenience
//! for `curl`; `--no-content-type` leaves it out.

use std::{
    io::{Read as _, Write as _},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{bail, Context as _};
use hookgate_core::{unix_now, Signer};
use hookgate_sender::new_message_id;

/// Arguments of `hookgate sign`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  hookgate sign --scheme standard --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw --body-file event.json
  mapfile -t h < <(hookgate sign --scheme github --secret s --body-file event.json); curl --data-binary @event.json \"${h[@]/#/-H}\" http://127.0.0.1:8080/hooks")]
pub(crate) struct Args {
    #[command(flatten)]
    key: super::SchemeArgs,
    /// Message id (default: a fresh `msg_...`). Not used by stripe (the id
    /// is the body's `id`) nor slack (no id).
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// Unix timestamp in seconds to sign (default: now).
    #[arg(long, value_name = "UNIX")]
    timestamp: Option<i64>,
    /// File holding the exact body bytes to sign, or `-` for stdin.
    #[arg(long, value_name = "FILE|-")]
    body_file: PathBuf,
    /// Do not add `Content-Type: application/json` for JSON bodies.
    #[arg(long)]
    no_content_type: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let scheme = args.key.scheme()?;
    let secrets = args
        .key
        .secrets
        .iter()
        .map(|s| scheme.secret(s))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("invalid --secret for scheme {scheme}"))?;
    let signer = Signer::with_secrets(scheme, secrets).context("at least one --secret")?;
    let id = match args.id {
        Some(id) => {
            check_id(&id)?;
            id
        }
        None => new_message_id(),
    };
    let timestamp = args.timestamp.unwrap_or_else(unix_now);
    if !(0..=999_999_999_999_999_999).contains(&timestamp) {
        bail!("--timestamp must be Unix seconds between 0 and 999999999999999999");
    }
    let body = read_body_file(&args.body_file)?;

    let mut out = String::new();
    for (name, value) in signer.sign(&id, timestamp, &body) {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(&value);
        out.push('\n');
    }
    if !args.no_content_type && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() {
        out.push_str("Content-Type: application/json\n");
    }
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Ids travel in headers: visible ASCII, at most 256 bytes (what verifiers accept).
fn check_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty() || id.len() > hookgate_core::scheme::MAX_ID_LEN {
        bail!(
            "--id must be 1 to {} characters",
            hookgate_core::scheme::MAX_ID_LEN
        );
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("--id must be visible ASCII (no spaces or control characters)");
    }
    Ok(())
}

/// Read a `--body-file` argument: a path, or `-` for stdin. Bytes as they
/// are; they need not be UTF-8.
pub(crate) fn read_body_file(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut body = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut body)
            .context("reading the body from stdin")?;
        Ok(body)
    } else {
        std::fs::read(path).with_context(|| format!("reading --body-file {}", path.display()))
    }
}
