//! `hookgate serve`.

use std::process::ExitCode;

/// Arguments of `hookgate serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`hookgate serve` is not implemented yet")
}
