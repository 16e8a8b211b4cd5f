//! The Lambda bootstrap: read the configuration, connect to the shared
//! store once (cold start), then serve invocations with the layer. See the
//! library docs and the README's "Serverless" section.

use hookgate_lambda_receiver::{receiver, Config, Store};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .without_time() // CloudWatch adds its own
        .init();
    let config = Config::from_env()?;
    let verifier = config.verifier()?;
    match config.connect().await? {
        Store::Redis(store) => lambda_http::run(receiver(verifier, store, &config.namespace)).await,
        Store::Postgres(store) => {
            lambda_http::run(receiver(verifier, store, &config.namespace)).await
        }
    }
}
