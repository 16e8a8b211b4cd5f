//! The `hookgate` command: demo, sign, verify, serve, send, dlq.
//!
//! Exit codes: 0 success; 1 the operation's own failure (invalid signature,
//! delivery dead-lettered, ...); 2 usage or configuration errors.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin;
mod cmd;
mod maintenance;

/// Make webhooks safe to receive and reliable to send.
#[derive(Debug, Parser)]
#[command(name = "hookgate", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole story on embedded defaults: sign, send, retry, verify, dedup, dead-letter, replay.
    Demo(cmd::demo::Args),
    /// Print the headers that sign a body, ready for `curl -H`.
    Sign(cmd::sign::Args),
    /// Verify a signed body; prints the event id (exit 0) or the reason (exit 1).
    Verify(cmd::verify::Args),
    /// Run a verifying, deduplicating receiver that prints each accepted event as a JSON line.
    Serve(cmd::serve::Args),
    /// Deliver one signed message with retries.
    Send(cmd::send::Args),
    /// Inspect, replay and purge dead letters.
    Dlq(cmd::dlq::Args),
    /// Deliver queued messages from a Postgres or Redis queue until stopped.
    Worker(cmd::worker::Args),
    /// Register, show, enable and disable endpoints in a queue.
    Endpoint(cmd::endpoint::Args),
    /// Store one message for an endpoint; a worker delivers it.
    Enqueue(cmd::enqueue::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout with exit 0, usage errors to stderr with 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // `send` and `dlq` log through `tracing` only when asked to (`RUST_LOG`),
    // so their default output stays what the README shows. tokio-postgres
    // logs every statement's parameters at debug level (endpoint records
    // with their URLs and secrets among them): that target stays off.
    if matches!(cli.command, Command::Send(_) | Command::Dlq(_)) {
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
            let filter = filter.add_directive(
                "tokio_postgres::query=off"
                    .parse()
                    .expect("a valid directive"),
            );
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(cmd::colour())
                .with_env_filter(filter)
                .try_init()
                .ok();
        }
    }
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Sign(args) => cmd::sign::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Send(args) => cmd::send::run(args),
        Command::Dlq(args) => cmd::dlq::run(args),
        Command::Worker(args) => cmd::worker::run(args),
        Command::Endpoint(args) => cmd::endpoint::run(args),
        Command::Enqueue(args) => cmd::enqueue::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Errors may quote a store DSN or a URL: never print a credential.
            eprintln!("hookgate: {}", cmd::scrub(&cmd::one_line(&e)));
            ExitCode::from(2)
        }
    }
}
