//! `hookgate send`.

use std::process::ExitCode;

/// Arguments of `hookgate send`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`hookgate send` is not implemented yet")
}
