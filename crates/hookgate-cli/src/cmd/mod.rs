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
