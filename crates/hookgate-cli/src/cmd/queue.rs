//! Opening the queue named by `--store` / `--namespace` / `--store-ca`, the
//! same way for every command (`worker`, `endpoint`, `enqueue`, `send`,
//! `dlq`): TLS through `hookgate-backend`, the namespace as the Postgres
//! schema or the Redis key prefix `<NS>:q:`, and the store's leader lock for
//! maintenance, and the encryption keys of `HOOKGATE_ENCRYPTION_KEY` /
//! `HOOKGATE_ENCRYPTION_KEY_FILE` that seal endpoint credentials at rest.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use hookgate_sender::{maintenance::LeaderLock, queue::Queue};

/// The queue and the leader lock its maintenance runs under.
pub(crate) async fn open(
    store: &str,
    namespace: Option<&str>,
    store_ca: Option<&std::path::Path>,
) -> anyhow::Result<(Arc<dyn Queue>, Arc<dyn LeaderLock>)> {
    open_impl(store, namespace, store_ca, false).await
}

/// [`open`] for commands that only read: a Postgres namespace whose
/// tables do not exist is an error naming it, and nothing is created.
pub(crate) async fn open_read_only(
    store: &str,
    namespace: Option<&str>,
    store_ca: Option<&std::path::Path>,
) -> anyhow::Result<Arc<dyn Queue>> {
    Ok(open_impl(store, namespace, store_ca, true).await?.0)
}

async fn open_impl(
    store: &str,
    namespace: Option<&str>,
    store_ca: Option<&std::path::Path>,
    read_only: bool,
) -> anyhow::Result<(Arc<dyn Queue>, Arc<dyn LeaderLock>)> {
    #[cfg(feature = "postgres")]
    if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        if store_ca.is_some() {
            anyhow::bail!(
                "--store-ca is for rediss:// stores; for Postgres put sslrootcert=FILE in the URL"
            );
        }
        let mut queue = hookgate_sender::queue::PostgresQueue::connect(store)
            .await
            .context("cannot open the Postgres queue")?;
        if let Some(keys) = keyring()? {
            queue = queue.with_keyring(keys);
        }
        if let Some(ns) = namespace {
            queue = queue.with_schema(ns).context("invalid --namespace")?;
        }
        if read_only
            && !queue
                .exists()
                .await
                .context("cannot reach the Postgres queue")?
        {
            anyhow::bail!(
                "no hookgate queue in namespace (schema) {:?} of this database",
                queue.schema()
            );
        }
        let lock: Arc<dyn LeaderLock> = Arc::new(queue.leader_lock());
        return Ok((Arc::new(queue), lock));
    }
    #[cfg(feature = "redis")]
    if store.starts_with("redis://") || store.starts_with("rediss://") {
        let mut queue = hookgate_sender::queue::RedisQueue::connect_with_ca(store, store_ca)
            .await
            .context("cannot open the Redis queue")?;
        if let Some(keys) = keyring()? {
            queue = queue.with_keyring(keys);
        }
        if let Some(ns) = namespace {
            queue = queue
                .with_prefix(&format!("{ns}:q:"))
                .context("invalid --namespace")?;
        }
        let lock: Arc<dyn LeaderLock> = Arc::new(queue.leader_lock(Duration::from_secs(60)));
        return Ok((Arc::new(queue), lock));
    }
    if store.starts_with("memory") {
        anyhow::bail!(
            "--store memory lives only inside one process; use postgres://.. or redis://.."
        );
    }
    let _ = (namespace, store_ca, read_only);
    anyhow::bail!("unsupported --store (expected postgres://.., redis://.. or rediss://..)")
}

/// The encryption keys from `HOOKGATE_ENCRYPTION_KEY` /
/// `HOOKGATE_ENCRYPTION_KEY_FILE`, when set.
pub(crate) fn keyring() -> anyhow::Result<Option<hookgate_sender::seal::Keyring>> {
    hookgate_sender::seal::Keyring::from_env()
        .context("invalid encryption key (HOOKGATE_ENCRYPTION_KEY or HOOKGATE_ENCRYPTION_KEY_FILE)")
}
