//! `hookgate demo`: the whole reliability story with numbers, on embedded
//! defaults (memory store and queue, loopback, ports it picks).
//!
//! The default run ([`story`]) sends `--events` events (500) from a sender
//! to a receiver behind the verifying, deduplicating layer, through faults
//! injected in front of the receiver, while an attacker task sends forged and
//! replayed requests. It shows a progress bar (plain lines when stdout is not
//! a terminal), prints a summary table and checks that every event's handler
//! effect happened exactly once: exit 1 if not.
//!
//! `--walkthrough` ([`walkthrough`]) tells the same promises step by step,
//! one event at a time.

use std::process::ExitCode;

use anyhow::Context as _;
use hookgate_core::Scheme;

mod story;
mod walkthrough;

/// Arguments of `hookgate demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Signature scheme the demo's sender and receiver use.
    #[arg(long, default_value = "standard")]
    scheme: Scheme,
    /// How many events the sender delivers.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    events: u32,
    /// Seed of the fault plan and the retry jitter: the same seed injects the
    /// same faults into the same events (printed at the start of every run).
    #[arg(long)]
    seed: Option<u64>,
    /// Where the receiver's dedup store and the sender's queue live: `memory`
    /// (this process), `redis://..` or `postgres://..` (a fresh namespace,
    /// removed at the end).
    #[arg(
        long,
        default_value = "memory",
        env = "HOOKGATE_STORE",
        hide_env_values = true
    )]
    store: String,
    /// The short story instead: one event per promise, every attempt printed.
    #[arg(long, conflicts_with_all = ["events", "seed", "store"])]
    walkthrough: bool,
    /// Test-only: deduplicate nothing (a store that forgets every claim), to
    /// show the exactly-once check failing.
    #[arg(long, hide = true)]
    no_dedup: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    if args.walkthrough {
        return rt.block_on(walkthrough::run(args.scheme));
    }
    let options = story::Options {
        scheme: args.scheme,
        events: args.events,
        seed: args.seed.unwrap_or_else(rand::random),
        store: args.store,
        dedup: !args.no_dedup,
    };
    rt.block_on(story::run(options))
}
