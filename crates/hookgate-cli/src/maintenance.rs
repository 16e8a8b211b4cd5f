//! The receiver's dedup sweep as a [`Task`] of the sender crate's
//! maintenance [`Runner`], so `serve` (and any process holding both a dedup
//! store and a queue) runs all housekeeping the same way: bounded batches,
//! an interval with jitter, at once again while batches are full, and the
//! `hookgate_sender_maintenance_*` metrics.
//!
//! `serve` runs it without a leader lock ([`NoLock`]): each batch deletes at
//! most [`PostgresStore::SWEEP_BATCH`] expired rows in its own transaction,
//! so replicas sweeping at once only repeat cheap work, and every replica
//! keeps sweeping when another dies.
//!
//! [`NoLock`]: hookgate_sender::maintenance::NoLock
//! [`Runner`]: hookgate_sender::maintenance::Runner

#[cfg(feature = "postgres")]
pub(crate) use self::postgres::DedupSweep;

#[cfg(feature = "postgres")]
mod postgres {
    use hookgate_sender::{
        maintenance::{Report, Task},
        queue::{BoxFuture, QueueError, QueueErrorKind},
    };
    use hookgate_tower::{store::StoreErrorKind, PostgresStore};

    /// Deletes dedup rows past their lease or retention, a batch a run.
    #[derive(Debug, Clone)]
    pub(crate) struct DedupSweep(pub(crate) PostgresStore);

    impl Task for DedupSweep {
        fn name(&self) -> &'static str {
            "dedup_sweep"
        }

        fn run_once(&self) -> BoxFuture<'_, Result<Report, QueueError>> {
            Box::pin(async move {
                match self.0.sweep_batch().await {
                    Ok(n) => Ok(Report::new(n, n >= PostgresStore::SWEEP_BATCH)),
                    Err(e) => {
                        let kind = match e.kind() {
                            StoreErrorKind::Unavailable => QueueErrorKind::Unavailable,
                            StoreErrorKind::Config => QueueErrorKind::Config,
                            _ => QueueErrorKind::Backend,
                        };
                        Err(QueueError::new(kind, "dedup sweep failed").with_source(e))
                    }
                }
            })
        }
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use std::{sync::Arc, time::Duration};

    use hookgate_sender::maintenance::{NoLock, Runner};
    use hookgate_tower::{
        store::{Claim, DedupStore},
        PostgresStore,
    };

    use super::DedupSweep;

    #[tokio::test]
    async fn the_runner_sweeps_expired_dedup_rows() {
        let url = std::env::var("HOOKGATE_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let table = format!(
            "hookgate_sweep_{:012x}",
            rand::random::<u64>() & 0xffff_ffff_ffff
        );
        let store = PostgresStore::new(&url)
            .unwrap()
            .with_table(&table)
            .unwrap();
        if let Err(e) = store.migrate().await {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "PostgreSQL required under CI=true: {e}"
            );
            eprintln!("skipping: {e}");
            return;
        }
        // Two claims whose leases end at once, one that stays.
        for key in ["a", "b"] {
            assert!(matches!(
                store
                    .claim(key, &[0; 32], Duration::from_millis(1))
                    .await
                    .unwrap(),
                Claim::Acquired(_)
            ));
        }
        assert!(matches!(
            store
                .claim("c", &[0; 32], Duration::from_secs(600))
                .await
                .unwrap(),
            Claim::Acquired(_)
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;

        let runner = Runner::new(Arc::new(NoLock)).with_task(Arc::new(DedupSweep(store.clone())));
        let reports = runner.run_once().await;
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].task, "dedup_sweep");
        let report = reports[0].result.as_ref().unwrap();
        assert_eq!(report.acted, 2);
        assert!(!report.more);
        // The live claim is untouched: a second claim on it is in flight.
        assert!(matches!(
            store
                .claim("c", &[0; 32], Duration::from_secs(1))
                .await
                .unwrap(),
            Claim::InFlight { .. }
        ));

        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
    }
}
