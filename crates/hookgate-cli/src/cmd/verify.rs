//! `hookgate verify`.

use std::process::ExitCode;

/// Arguments of `hookgate verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`hookgate verify` is not implemented yet")
}
