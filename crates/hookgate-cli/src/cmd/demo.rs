//! `hookgate demo`.

use std::process::ExitCode;

/// Arguments of `hookgate demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`hookgate demo` is not implemented yet")
}
