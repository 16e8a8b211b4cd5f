//! One module per subcommand; each has `Args` (clap) and `run`.
//!
//! `run` returns `Ok(ExitCode)` for outcomes (0 ok, 1 the operation failed) and
//! `Err` for usage/configuration problems, which `main` prints and exits 2.

pub(crate) mod demo;
pub(crate) mod dlq;
pub(crate) mod send;
pub(crate) mod serve;
pub(crate) mod sign;
pub(crate) mod verify;

use hookgate_core::Scheme;

/// `--scheme` and `--secret`, spelled the same in every subcommand.
#[derive(clap::Args)]
pub(crate) struct SchemeArgs {
    /// Signature scheme: standard, stripe, github, slack, shopify.
    #[arg(long, value_name = "SCHEME", default_value = "standard")]
    pub(crate) scheme: Scheme,
    /// Secret as the provider gives it (`whsec_...` for standard; the text
    /// itself for the others). Repeat for rotation: receiving accepts a
    /// signature by any of them; sending signs with each where the scheme
    /// carries several signatures (standard, stripe), else with the first.
    #[arg(
        long = "secret",
        value_name = "SECRET",
        required = true,
        env = "HOOKGATE_SECRET",
        hide_env_values = true
    )]
    pub(crate) secrets: Vec<String>,
}

impl std::fmt::Debug for SchemeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemeArgs")
            .field("scheme", &self.scheme)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .finish()
    }
}
