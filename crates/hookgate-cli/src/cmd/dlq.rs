//! `hookgate dlq`.

use std::process::ExitCode;

/// Arguments of `hookgate dlq`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`hookgate dlq` is not implemented yet")
}
