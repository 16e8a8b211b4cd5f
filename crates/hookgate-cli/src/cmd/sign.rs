//! `hookgate sign`.

use std::process::ExitCode;

/// Arguments of `hookgate sign`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`hookgate sign` is not implemented yet")
}
