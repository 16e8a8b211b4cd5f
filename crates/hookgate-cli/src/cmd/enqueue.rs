//! `hookgate enqueue`: store one message for a registered endpoint in a
//! Postgres or Redis queue and print its id; a running `hookgate worker`
//! delivers it. The same `--id` twice stores it once (one history per key).

use std::process::ExitCode;

use anyhow::Context as _;
use hookgate_sender::{Message, Sender};

/// Arguments of `hookgate enqueue`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  hookgate enqueue shop --data '{\"order\":1042}' --event-type order.paid --store postgres://postgres@127.0.0.1/test
  hookgate enqueue shop --data @event.json --id evt_1042 --store redis://127.0.0.1:6379 --namespace shop")]
pub(crate) struct Args {
    /// Endpoint id (registered with `hookgate endpoint add`).
    #[arg(value_name = "ENDPOINT_ID")]
    endpoint: String,
    /// Body: literal JSON, `@FILE`, or `-` for stdin. Sent byte for byte.
    #[arg(long, value_name = "JSON|@FILE|-")]
    data: String,
    /// Event type recorded with the message.
    #[arg(long, value_name = "TYPE", default_value = "hookgate.event")]
    event_type: String,
    /// Message id (default: a fresh `msg_...`). Enqueueing an id again is a no-op.
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// The queue: `postgres://..` or `redis://..` / `rediss://..`.
    #[arg(
        long,
        value_name = "URL",
        env = "HOOKGATE_STORE",
        hide_env_values = true
    )]
    store: String,
    /// Namespace in the store: the Postgres schema, or the Redis key prefix `<NS>:q:`.
    #[arg(long, value_name = "NS", env = "HOOKGATE_NAMESPACE")]
    namespace: Option<String>,
    /// CA certificates (PEM) a `rediss://` store must chain to.
    #[arg(long, value_name = "FILE", env = "HOOKGATE_STORE_CA")]
    store_ca: Option<std::path::PathBuf>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let body = super::send::read_data(&args.data)?;
    let mut message = Message::new(args.event_type.clone(), body);
    if let Some(id) = &args.id {
        message = message.try_with_id(id.clone()).context("invalid --id")?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let (queue, _) = super::queue::open(
            &args.store,
            args.namespace.as_deref(),
            args.store_ca.as_deref(),
        )
        .await?;
        let id = message.id.clone();
        Sender::new(queue)
            .enqueue(&args.endpoint, message)
            .await
            .context("cannot enqueue")?;
        println!("{id}");
        Ok(ExitCode::SUCCESS)
    })
}
