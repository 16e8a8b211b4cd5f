//! PostgreSQL store: one autocommit statement per operation.
//!
//! ```no_run
//! use hookgate_tower::store::PostgresStore;
//! use std::time::Duration;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), hookgate_tower::store::StoreError> {
//! // Creates the table `hookgate_dedup` if it is missing.
//! let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
//! // Delete rows past their retention every five minutes.
//! let _sweeper = store.spawn_sweeper(Duration::from_secs(300));
//!
//! // Or: another table (schema-qualified), set up explicitly.
//! let other = PostgresStore::new("postgres://postgres@127.0.0.1:5432/test")?
//!     .with_table("webhooks.dedup")?;
//! other.migrate().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Table
//! ```sql
//! CREATE TABLE IF NOT EXISTS hookgate_dedup (
//!     key        text PRIMARY KEY,
//!     token      text,                 -- the claim's fencing token, NULL once done
//!     status     integer NOT NULL,     -- 0 while claimed, else the stored HTTP status
//!     digest     bytea NOT NULL,       -- SHA-256 of the body
//!     expires_at timestamptz NOT NULL, -- lease end (claim) or retention end (done)
//!     content_type text,               -- done: the response's content type
//!     body       bytea                 -- done: the response body (at most 4 KiB)
//! );
//! ALTER TABLE hookgate_dedup SET (vacuum_truncate = false); -- see "Autovacuum off"
//! ```
//! Tables created by earlier versions (without the last two columns) get
//! them from [`migrate`](PostgresStore::migrate) (`ADD COLUMN IF NOT
//! EXISTS`); until then the store answers [`StoreErrorKind::Config`]
//! (500), as it does for a table that is missing.
//! [`migrate`](PostgresStore::migrate) (run by [`connect`](PostgresStore::connect))
//! creates it (and its schema, if the name has one) under an advisory lock,
//! so that replicas starting together do not race. Times are always the
//! database's clock (`now()`), never the receiver's.
//!
//! There is deliberately no index on `expires_at`: completing a claim then
//! changes no indexed column, so it is a HOT update that writes no index
//! entries — on the project's machine this more than doubled new events per
//! second (see BENCHMARKS.md). The price is that [`sweep`](PostgresStore::sweep)
//! scans the table. If your table is large and you sweep often, you may add
//! `CREATE INDEX ON hookgate_dedup (expires_at)` yourself; the store works
//! either way.
//!
//! # One round trip per operation
//! [`claim`](DedupStore::claim) is a single statement (in a transaction of
//! its own that commits without waiting for a WAL flush, sent with it in one
//! write: see [Durability](#durability)):
//!
//! ```sql
//! WITH cur AS (SELECT status, digest, expires_at FROM t WHERE key = $1 AND expires_at > now()),
//! ins AS (
//!   INSERT INTO t AS d (key, token, status, digest, expires_at)
//!   SELECT $1, $2, 0, $3, now() + $4 * interval '1 millisecond' WHERE NOT EXISTS (SELECT 1 FROM cur)
//!   ON CONFLICT (key) DO UPDATE SET token = EXCLUDED.token, status = 0, ...
//!     WHERE d.expires_at <= now()          -- only an expired claim or done record
//!   RETURNING 1)
//! SELECT <acquired> FROM ins UNION ALL SELECT <in flight | done> FROM cur
//! ```
//!
//! A duplicate (a live claim or done record in the statement's snapshot)
//! inserts nothing, so it takes no row lock and writes nothing: one read-only
//! round trip. A new key, an expired claim and a done record past its
//! retention are all taken by the `INSERT .. ON CONFLICT`, which the unique
//! key makes atomic. In one race only — another claim committed between this
//! statement's snapshot and its insert — the statement returns no row; it is
//! then rerun once (the new snapshot sees that claim). `complete` is one
//! `INSERT .. ON CONFLICT (key) DO UPDATE .. WHERE (d.status = 0 AND d.token
//! = $2) OR d.expires_at <= now()` (the token's own claim, expired or not,
//! or a free key); `release` and `renew` are one `DELETE` / `UPDATE .. WHERE
//! key = $1 AND token = $2 AND status = 0`. Statements are prepared once per
//! pooled connection (`prepare_cached`). Keys longer than 256 bytes are
//! stored as `#sha256:<hex>` of the key (B-tree entries are size-limited).
//!
//! # Sweeping
//! Expired rows are harmless (they are claimable again) but take space. Call
//! [`sweep`](PostgresStore::sweep) periodically, or run
//! [`spawn_sweeper`](PostgresStore::spawn_sweeper) in one replica (several
//! are harmless too).
//!
//! # Availability
//! Connection refused, connect/pool timeouts, a closed connection and the
//! server's "shutting down"/"too many connections"/"statement timeout"
//! errors map to [`StoreErrorKind::Unavailable`]. Each call is bounded by
//! [`with_timeout`](PostgresStore::with_timeout) (default
//! [`PostgresStore::DEFAULT_TIMEOUT`]), and so is each statement on the
//! server (the store's sessions run with `statement_timeout` set to it), so
//! a claim the caller gave up on does not take effect later.
//!
//! A call that times out (or is dropped by its caller) takes its connection
//! out of the pool instead of returning it: a connection that went silent
//! without closing (a lost NAT entry, a frozen network path) is never handed
//! out again, and the next call opens a fresh one, so service returns within
//! one timeout of the network returning. Connections that finished their
//! call go back to the pool unchecked (`RecyclingMethod::Fast`), which keeps
//! the common path at one round trip.
//!
//! A missing table or column (SQLSTATE `42P01`, `42703`: the table was
//! dropped, or [`migrate`](PostgresStore::migrate) never ran) maps to
//! [`StoreErrorKind::Config`], which the layer answers with 500.
//!
//! # Durability
//! A new event costs two commits, claim and complete. The **complete** (the
//! done record that makes a retry after the answer a duplicate) is flushed
//! to disk under the server's `synchronous_commit` setting before the layer
//! answers. The **claim** commits with `synchronous_commit = off` (it runs as
//! `BEGIN; SET LOCAL synchronous_commit = off` + the claim + `COMMIT`,
//! pipelined, so still one round trip): it does not wait for a WAL flush of
//! its own. WAL is flushed in order, so once the complete is durable its
//! claim is too; what a database crash can lose is only the claims of
//! requests still being handled (at most about three `wal_writer_delay`s
//! old). A retry of such an event reaching the restarted database while its
//! first handler still runs is then handled again, as after an expired
//! lease — and the first handler's `complete` finds the newer claim and
//! reports it. In exchange each new event waits for one WAL flush instead
//! of two: flush waits were where the store spent its time under load
//! (`pg_stat_activity` showed most backends in `LWLock:WALWrite` /
//! `IO:WALSync`; see "Soak" in BENCHMARKS.md for the figures).
//! [`with_durable_claims`](PostgresStore::with_durable_claims) flushes
//! claims too (the behaviour before this change). This departs from the
//! project's design notes, which describe the claim as a plain autocommit
//! statement: it is still one atomic statement and one round trip, only its
//! commit no longer waits for the disk.
//!
//! [`with_synchronous_commit_off`](PostgresStore::with_synchronous_commit_off)
//! goes further and flushes nothing before answering: after a database crash
//! the last few hundred milliseconds of claims and done records may be lost,
//! so a retry arriving then could run its handler a second time. Nothing is
//! corrupted.
//!
//! # Autovacuum off
//! Completing a claim updates its row, and the sweep deletes expired rows:
//! both leave dead row versions that only `VACUUM` turns into reusable space
//! (pages are also pruned in passing, but without VACUUM the free space map
//! never learns about it, so the table keeps growing). Where the server runs
//! with `autovacuum = off`, or the table has `autovacuum_enabled = false`,
//! [`sweep`](PostgresStore::sweep) runs `VACUUM` on the table itself after
//! it deleted rows (a warning is logged if the store's role may not).
//!
//! Neither that `VACUUM` nor autovacuum truncates the table
//! ([`migrate`](PostgresStore::migrate) sets the table's `vacuum_truncate =
//! false`, PostgreSQL 12 or later): giving empty trailing pages back to the
//! file system takes an `ACCESS EXCLUSIVE` lock that stops every claim while
//! it lasts, for space that the next inserts would reuse. In a soak run a
//! truncating `VACUUM` coincided with 40 s of throughput under a fifth of
//! the median (BENCHMARKS.md, "Soak").

use super::{
    BoxFuture, Claim, ClaimToken, DedupStore, Digest, DoneRecord, Result, StoreError,
    StoreErrorKind,
};
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use hookgate_backend::postgres::{classify, describe, valid_identifier, PgUrl, PoolOptions};
use hookgate_backend::ErrorClass;
use sha2::Digest as _;
use std::{borrow::Cow, fmt, sync::Arc, time::Duration};
use tokio_postgres::{Config, NoTls};

/// Longest lease or retention passed to the database (ten years).
const MAX_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

/// How many times a claim reruns after losing the snapshot race (see the
/// module docs); each rerun sees the winner, so one is enough in practice.
const CLAIM_ATTEMPTS: usize = 3;

/// Opens the transaction in which a claim commits without waiting for its
/// WAL flush (see "Durability" in the module docs).
const ASYNC_COMMIT_BEGIN: &str = "BEGIN; SET LOCAL synchronous_commit = off";

/// Rows deleted per statement by [`PostgresStore::sweep`].
const SWEEP_BATCH: i64 = 10_000;

/// Least bound on one sweep statement (it scans the table).
const SWEEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The SQL for one table.
struct Sql {
    table: String,
    migrate: String,
    claim: String,
    complete: String,
    release: String,
    renew: String,
    sweep: String,
    vacuum: String,
    autovacuum_off: String,
}

impl Sql {
    /// `table` is validated: `name` or `schema.name`, each part an unquoted
    /// SQL identifier of at most 63 bytes.
    fn new(table: &str) -> Result<Self> {
        let parts: Vec<&str> = table.split('.').collect();
        if parts.is_empty() || parts.len() > 2 || !parts.iter().all(|p| valid_identifier(p)) {
            return Err(StoreError::new(
                StoreErrorKind::Config,
                format!(
                    "invalid table name {table:?}: expected `name` or `schema.name`, each \
                     [A-Za-z_][A-Za-z0-9_]* and at most 63 bytes"
                ),
            ));
        }
        let quoted: Vec<String> = parts.iter().map(|p| format!("\"{p}\"")).collect();
        let t = quoted.join(".");
        let schema = if parts.len() == 2 {
            format!("CREATE SCHEMA IF NOT EXISTS {};", quoted[0])
        } else {
            String::new()
        };
        let lock_name = table.replace('\'', "");
        let migrate_timeout_ms = SWEEP_TIMEOUT.as_millis();
        Ok(Self {
            table: table.to_owned(),
            migrate: format!(
                "BEGIN;
                 SET LOCAL statement_timeout = {migrate_timeout_ms};
                 SELECT pg_advisory_xact_lock(hashtext('hookgate_dedup_migrate:{lock_name}'));
                 {schema}
                 CREATE TABLE IF NOT EXISTS {t} (
                     key text PRIMARY KEY,
                     token text,
                     status integer NOT NULL,
                     digest bytea NOT NULL,
                     expires_at timestamptz NOT NULL,
                     content_type text,
                     body bytea
                 );
                 ALTER TABLE {t} ADD COLUMN IF NOT EXISTS content_type text,
                     ADD COLUMN IF NOT EXISTS body bytea;
                 DO $$ BEGIN
                     IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = '{t}'::regclass
                                    AND 'vacuum_truncate=false' = ANY(reloptions)) THEN
                         ALTER TABLE {t} SET (vacuum_truncate = false);
                     END IF;
                 END $$;
                 COMMIT;"
            ),
            claim: format!(
                "WITH cur AS (
                     SELECT status, digest, expires_at, content_type, body FROM {t}
                     WHERE key = $1 AND expires_at > now()
                 ), ins AS (
                     INSERT INTO {t} AS d (key, token, status, digest, expires_at)
                     SELECT $1, $2, 0, $3, now() + $4::int8 * interval '1 millisecond'
                     WHERE NOT EXISTS (SELECT 1 FROM cur)
                     ON CONFLICT (key) DO UPDATE
                         SET token = EXCLUDED.token, status = 0, digest = EXCLUDED.digest,
                             expires_at = EXCLUDED.expires_at
                         WHERE d.expires_at <= now()
                     RETURNING 1
                 )
                 SELECT 0::int4, 0::int8, 0::int4, NULL::bytea, NULL::text, NULL::bytea FROM ins
                 UNION ALL
                 SELECT CASE WHEN status = 0 THEN 1 ELSE 2 END::int4,
                        GREATEST(0, CEIL(EXTRACT(EPOCH FROM (expires_at - now())) * 1000))::int8,
                        status::int4, digest, content_type, body
                 FROM cur"
            ),
            complete: format!(
                "INSERT INTO {t} AS d (key, token, status, digest, expires_at, content_type, body)
                 VALUES ($1, NULL, $3, $4, now() + $5::int8 * interval '1 millisecond', $6, $7)
                 ON CONFLICT (key) DO UPDATE
                     SET token = NULL, status = EXCLUDED.status, digest = EXCLUDED.digest,
                         expires_at = EXCLUDED.expires_at,
                         content_type = EXCLUDED.content_type, body = EXCLUDED.body
                     WHERE (d.status = 0 AND d.token = $2::text) OR d.expires_at <= now()"
            ),
            release: format!("DELETE FROM {t} WHERE key = $1 AND token = $2 AND status = 0"),
            renew: format!(
                "UPDATE {t} SET expires_at = now() + $3::int8 * interval '1 millisecond'
                 WHERE key = $1 AND token = $2 AND status = 0"
            ),
            sweep: format!(
                "DELETE FROM {t} WHERE ctid = ANY(ARRAY(
                     SELECT ctid FROM {t} WHERE expires_at <= now() LIMIT $1))"
            ),
            // No truncation: it takes an ACCESS EXCLUSIVE lock that stalls
            // every claim, for space the next inserts reuse anyway.
            vacuum: format!("VACUUM (TRUNCATE false) {t}"),
            // `t` is validated and quoted above (letters, digits, `_`, `"`,
            // `.`), so it is safe inside a string literal.
            autovacuum_off: format!(
                "SELECT current_setting('autovacuum') = 'off'
                     OR coalesce((SELECT 'autovacuum_enabled=false' = ANY(c.reloptions)
                                  FROM pg_class c WHERE c.oid = to_regclass('{t}')), false)"
            ),
        })
    }
}

/// A [`DedupStore`] on PostgreSQL (feature `postgres`), through a
/// deadpool-postgres connection pool. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    url: PgUrl,
    pool: Pool,
    sql: Arc<Sql>,
    pool_size: usize,
    timeout: Duration,
    synchronous_commit_off: bool,
    durable_claims: bool,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("table", &self.sql.table)
            .field("pool_size", &self.pool_size)
            .field("pool_connections", &status.size)
            .field("timeout", &self.timeout)
            .field("synchronous_commit_off", &self.synchronous_commit_off)
            .field("durable_claims", &self.durable_claims)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Table used unless [`with_table`](Self::with_table) says otherwise.
    pub const DEFAULT_TABLE: &'static str = "hookgate_dedup";
    /// Bound on each call, on connecting and on waiting for a pooled
    /// connection, unless changed with [`with_timeout`](Self::with_timeout).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Pooled connections unless changed with
    /// [`with_pool_size`](Self::with_pool_size).
    pub const DEFAULT_POOL_SIZE: usize = 16;

    /// Connect to `url` (`postgres://user@host:port/db`) and create the
    /// default table if it is missing.
    ///
    /// # Errors
    /// [`StoreErrorKind::Config`] for a malformed URL;
    /// [`StoreErrorKind::Unavailable`] when the server cannot be reached
    /// within [`Self::DEFAULT_TIMEOUT`]; [`StoreErrorKind::Backend`] if the
    /// table cannot be created.
    pub async fn connect(url: &str) -> Result<Self> {
        let store = Self::new(url)?;
        store.migrate().await?;
        Ok(store)
    }

    /// A store for `url` without any I/O: connections are opened on first
    /// use, and the table is not created (call [`migrate`](Self::migrate)).
    ///
    /// # Errors
    /// [`StoreErrorKind::Config`] for a malformed URL.
    pub fn new(url: &str) -> Result<Self> {
        let url = PgUrl::parse(url).map_err(|e| {
            StoreError::new(StoreErrorKind::Config, "invalid PostgreSQL URL").with_source(e)
        })?;
        let mut store = Self {
            url,
            pool: placeholder_pool()?,
            sql: Arc::new(Sql::new(Self::DEFAULT_TABLE)?),
            pool_size: Self::DEFAULT_POOL_SIZE,
            timeout: Self::DEFAULT_TIMEOUT,
            synchronous_commit_off: false,
            durable_claims: false,
        };
        store.rebuild_pool()?;
        Ok(store)
    }

    /// Use `table` (`name` or `schema.name`) instead of
    /// [`Self::DEFAULT_TABLE`]. Call [`migrate`](Self::migrate) afterwards to
    /// create it.
    ///
    /// # Errors
    /// [`StoreErrorKind::Config`] unless each part is an unquoted SQL
    /// identifier (`[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes).
    pub fn with_table(mut self, table: &str) -> Result<Self> {
        self.sql = Arc::new(Sql::new(table)?);
        Ok(self)
    }

    /// Bound each call, each connection attempt and each wait for a pooled
    /// connection by `timeout`.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.rebuild_pool_or_keep();
        self
    }

    /// Keep at most `size` connections (at least 1). More connections let
    /// more concurrent commits share one WAL flush (group commit), which is
    /// what bounds new events per second; mind the server's
    /// `max_connections` across all replicas.
    #[must_use]
    pub fn with_pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self.rebuild_pool_or_keep();
        self
    }

    /// Run this store's sessions with `synchronous_commit = off`: commits
    /// return before their WAL reaches disk. Faster; after a database crash
    /// the most recent claims and done records (up to about three times
    /// `wal_writer_delay`) may be lost, so a retry of such an event could run
    /// its handler again. See the module docs.
    #[must_use]
    pub fn with_synchronous_commit_off(mut self) -> Self {
        self.synchronous_commit_off = true;
        self.rebuild_pool_or_keep();
        self
    }

    /// Flush each claim's commit to disk before answering, as `complete`
    /// does. By default a claim that inserts or takes over a row commits
    /// with `synchronous_commit = off` (see "Durability" in the module
    /// docs): new events then wait for one WAL flush instead of two.
    #[must_use]
    pub fn with_durable_claims(mut self) -> Self {
        self.durable_claims = true;
        self
    }

    /// The table this store uses, as given.
    #[must_use]
    pub fn table(&self) -> &str {
        &self.sql.table
    }

    fn rebuild_pool_or_keep(&mut self) {
        // Building a pool does no I/O and fails only on a missing runtime
        // setting, which `rebuild_pool` always provides; keep the old pool
        // rather than panic if that ever changes.
        if let Err(e) = self.rebuild_pool() {
            tracing::error!(error = %e, "cannot rebuild the Postgres pool; keeping the old one");
        }
    }

    fn rebuild_pool(&mut self) -> Result<()> {
        let mut settings = Vec::new();
        if self.synchronous_commit_off {
            settings.push(("synchronous_commit".to_owned(), "off".to_owned()));
        }
        self.pool = self
            .url
            .pool(&PoolOptions {
                max_size: self.pool_size,
                timeout: self.timeout,
                // The server gives up on a statement when the client does, so
                // a claim that timed out here (answered 503) does not take
                // effect later behind the caller's back.
                statement_timeout: Some(self.timeout),
                settings,
                // A connection whose call did not finish is discarded (see
                // `Checked`), so checkout need not spend a round trip.
                verify_on_checkout: false,
            })
            .map_err(|e| {
                StoreError::new(StoreErrorKind::Config, "cannot build the Postgres pool")
                    .with_source(e)
            })?;
        Ok(())
    }

    /// Create the table (and its schema) if missing. Safe to run
    /// concurrently from several replicas.
    ///
    /// # Errors
    /// [`StoreErrorKind::Unavailable`] if the server cannot be reached,
    /// [`StoreErrorKind::Backend`] if the statements fail.
    pub async fn migrate(&self) -> Result<()> {
        self.bounded_for(self.timeout.max(SWEEP_TIMEOUT), async {
            let conn = self.checked().await?;
            conn.client()
                .batch_execute(&self.sql.migrate)
                .await
                .map_err(map_pg)?;
            conn.done();
            Ok(())
        })
        .await
    }

    /// Delete every row whose lease or retention has passed; returns how
    /// many. Run it periodically (see [`spawn_sweeper`](Self::spawn_sweeper)).
    /// Deletes in batches of 10,000 rows, each its own transaction (so claims
    /// on the expired keys never wait long on the sweep's row locks), each
    /// bounded by the larger of the store's timeout and 60 s, on the server
    /// too (`SET LOCAL statement_timeout`).
    ///
    /// # Errors
    /// As [`migrate`](Self::migrate); rows deleted by earlier batches stay
    /// deleted.
    pub async fn sweep(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = self.delete_expired_batch().await?;
            total += n;
            if n < Self::SWEEP_BATCH {
                break;
            }
        }
        if total > 0 {
            self.vacuum_if_autovacuum_off().await;
        }
        Ok(total)
    }

    /// `VACUUM` the table if nothing else will: the server runs with
    /// `autovacuum = off` or the table with `autovacuum_enabled = false`
    /// (see "Autovacuum off" in the module docs). Failures are logged, not
    /// returned: the rows are deleted either way.
    async fn vacuum_if_autovacuum_off(&self) {
        let limit = self.timeout.max(SWEEP_TIMEOUT);
        let result = self
            .bounded_for(limit, async {
                let conn = self.checked().await?;
                let client = conn.client();
                let row = client
                    .query_one(&self.sql.autovacuum_off, &[])
                    .await
                    .map_err(map_pg)?;
                let off: bool = row.try_get(0).map_err(|e| {
                    StoreError::new(StoreErrorKind::Backend, "unexpected row").with_source(e)
                })?;
                if off {
                    // VACUUM cannot run in a transaction block, so the
                    // session's statement_timeout is raised around it.
                    client
                        .batch_execute(&format!("SET statement_timeout = {}", limit.as_millis()))
                        .await
                        .map_err(map_pg)?;
                    client
                        .batch_execute(&self.sql.vacuum)
                        .await
                        .map_err(map_pg)?;
                    client
                        .batch_execute("RESET statement_timeout")
                        .await
                        .map_err(map_pg)?;
                }
                conn.done();
                Ok(off)
            })
            .await;
        match result {
            Ok(true) => {
                tracing::debug!(table = %self.sql.table, "dedup table vacuumed (autovacuum is off)")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(table = %self.sql.table, error = %e, "could not VACUUM the dedup table (autovacuum is off, so it will keep growing)");
            }
        }
    }

    /// Rows one [`sweep_batch`](Self::sweep_batch) deletes at most.
    pub const SWEEP_BATCH: u64 = SWEEP_BATCH as u64;

    /// One batch of [`sweep`](Self::sweep): delete up to
    /// [`Self::SWEEP_BATCH`] expired rows in one transaction; returns how
    /// many. For a maintenance runner that reruns while batches are full.
    /// A batch that deleted rows but was not full (the last of a sweep)
    /// vacuums the table where autovacuum is off, as `sweep` does (see
    /// "Autovacuum off" in the module docs).
    ///
    /// # Errors
    /// As [`sweep`](Self::sweep).
    pub async fn sweep_batch(&self) -> Result<u64> {
        let n = self.delete_expired_batch().await?;
        if n > 0 && n < Self::SWEEP_BATCH {
            self.vacuum_if_autovacuum_off().await;
        }
        Ok(n)
    }

    async fn delete_expired_batch(&self) -> Result<u64> {
        self.bounded_for(self.timeout.max(SWEEP_TIMEOUT), async {
            let mut conn = self.checked().await?;
            let tx = conn.client_mut().transaction().await.map_err(map_pg)?;
            tx.batch_execute(&format!(
                "SET LOCAL statement_timeout = {}",
                self.timeout.max(SWEEP_TIMEOUT).as_millis()
            ))
            .await
            .map_err(map_pg)?;
            let stmt = tx.prepare_cached(&self.sql.sweep).await.map_err(map_pg)?;
            let n = tx.execute(&stmt, &[&SWEEP_BATCH]).await.map_err(map_pg)?;
            tx.commit().await.map_err(map_pg)?;
            conn.done();
            Ok(n)
        })
        .await
    }

    /// Run [`sweep`](Self::sweep) every `interval` on the current Tokio
    /// runtime until the handle is aborted. Errors are logged and retried at
    /// the next tick.
    ///
    /// # Panics
    /// Outside a Tokio runtime, or if `interval` is zero.
    pub fn spawn_sweeper(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match store.sweep().await {
                    Ok(n) => tracing::debug!(table = %store.sql.table, rows = n, "dedup sweep"),
                    Err(e) => {
                        tracing::warn!(table = %store.sql.table, error = %e, "dedup sweep failed");
                    }
                }
            }
        })
    }

    /// A pooled connection that is discarded, not returned to the pool,
    /// unless the call using it finishes ([`Checked::done`]).
    async fn checked(&self) -> Result<Checked> {
        Ok(Checked(Some(self.pooled().await?)))
    }

    async fn pooled(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Timeout(_) => StoreError::new(
                StoreErrorKind::Unavailable,
                "timed out waiting for a Postgres connection",
            )
            .with_source(e),
            PoolError::Backend(e) => map_pg(e),
            PoolError::Closed => {
                StoreError::new(StoreErrorKind::Unavailable, "the Postgres pool is closed")
            }
            other => StoreError::new(StoreErrorKind::Backend, "cannot get a Postgres connection")
                .with_source(other),
        })
    }

    async fn bounded<T>(&self, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        self.bounded_for(self.timeout, fut).await
    }

    async fn bounded_for<T>(
        &self,
        limit: Duration,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(elapsed) => Err(StoreError::new(
                StoreErrorKind::Unavailable,
                format!("Postgres did not answer within {limit:?}"),
            )
            .with_source(elapsed)),
        }
    }

    async fn claim_impl(&self, key: &str, digest: &Digest, lease: Duration) -> Result<Claim> {
        let key = &*db_key(key);
        let token = ClaimToken::generate();
        let lease_ms = millis(lease);
        self.bounded(async {
            let conn = self.checked().await?;
            let client = conn.client();
            let stmt = client
                .prepare_cached(&self.sql.claim)
                .await
                .map_err(map_pg)?;
            // Unless every statement flushes anyway (`durable_claims`, or
            // the sessions run without synchronous commit), the claim runs
            // in a transaction of its own with `synchronous_commit = off`;
            // the three messages go out together (tokio-postgres pipelines
            // requests polled together), so it stays one round trip.
            let relaxed = !self.durable_claims && !self.synchronous_commit_off;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&key, &token.as_str(), &digest.as_slice(), &lease_ms];
            for _ in 0..CLAIM_ATTEMPTS {
                let result = if relaxed {
                    let (begin, rows, commit) = futures_util::future::join3(
                        client.batch_execute(ASYNC_COMMIT_BEGIN),
                        client.query(&stmt, &params),
                        client.batch_execute("COMMIT"),
                    )
                    .await;
                    // A failed claim makes the COMMIT a rollback (no error);
                    // an error of BEGIN or COMMIT themselves is the call's.
                    begin.and(commit).and(rows)
                } else {
                    client.query(&stmt, &params).await
                };
                let rows = match result {
                    Ok(rows) => rows,
                    // Only if the server runs autocommit statements above
                    // READ COMMITTED: a concurrent claim aborted this one.
                    Err(e) if is_retryable(&e) => {
                        tracing::debug!(key, error = %e, "dedup claim conflicted; rerunning");
                        continue;
                    }
                    Err(e) => return Err(map_pg(e)),
                };
                if let Some(row) = rows.first() {
                    let claim = parse_claim(row, &token);
                    conn.done();
                    return claim;
                }
                // Lost the snapshot race: another claim committed after this
                // statement's snapshot. Rerun; the next snapshot sees it.
                tracing::trace!(key, "dedup claim lost the snapshot race; rerunning");
            }
            Err(StoreError::new(
                StoreErrorKind::Backend,
                "claim kept conflicting with concurrent claims; gave up after 3 attempts",
            ))
        })
        .await
    }

    async fn complete_impl(
        &self,
        key: &str,
        token: &ClaimToken,
        record: DoneRecord,
        retention: Duration,
    ) -> Result<bool> {
        let key = &*db_key(key);
        let status = i32::from(record.status.max(1));
        let retention_ms = millis(retention);
        let body: Option<&[u8]> = (!record.body.is_empty()).then_some(&record.body[..]);
        self.execute(
            &self.sql.complete,
            &[
                &key,
                &token.as_str(),
                &status,
                &record.digest.as_slice(),
                &retention_ms,
                &record.content_type.as_deref(),
                &body,
            ],
        )
        .await
    }

    async fn release_impl(&self, key: &str, token: &ClaimToken) -> Result<bool> {
        let key = &*db_key(key);
        self.execute(&self.sql.release, &[&key, &token.as_str()])
            .await
    }

    async fn renew_impl(&self, key: &str, token: &ClaimToken, lease: Duration) -> Result<bool> {
        let key = &*db_key(key);
        let lease_ms = millis(lease);
        self.execute(&self.sql.renew, &[&key, &token.as_str(), &lease_ms])
            .await
    }

    /// Run one statement that changes at most one row; `true` if it did.
    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<bool> {
        self.bounded(async {
            let conn = self.checked().await?;
            let client = conn.client();
            let stmt = client.prepare_cached(sql).await.map_err(map_pg)?;
            let n = client.execute(&stmt, params).await.map_err(map_pg)?;
            conn.done();
            Ok(n == 1)
        })
        .await
    }
}

/// A pooled connection used by one call. Dropped before [`Checked::done`]
/// (the call timed out, or its caller went away), it leaves the pool with
/// its connection closed, so a connection that stopped answering is never
/// handed out again.
struct Checked(Option<deadpool_postgres::Object>);

impl Checked {
    fn client(&self) -> &deadpool_postgres::Object {
        // Only `done` and `drop` take the object out, and both consume.
        self.0.as_ref().unwrap_or_else(|| unreachable!("taken"))
    }

    fn client_mut(&mut self) -> &mut deadpool_postgres::Object {
        self.0.as_mut().unwrap_or_else(|| unreachable!("taken"))
    }

    /// The call finished: return the connection to the pool.
    fn done(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Checked {
    fn drop(&mut self) {
        if let Some(obj) = self.0.take() {
            tracing::debug!("discarding a Postgres connection whose call did not finish");
            drop(deadpool_postgres::Object::take(obj));
        }
    }
}

/// A pool that is replaced before use (the struct needs one to exist).
fn placeholder_pool() -> Result<Pool> {
    let manager = Manager::from_config(
        Config::new(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(1)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| {
            StoreError::new(StoreErrorKind::Config, "cannot build the Postgres pool").with_source(e)
        })
}

/// Keys longer than this are stored as their SHA-256.
const MAX_KEY_LEN: usize = 256;

/// The key as stored: itself, or `#sha256:<hex>` when longer than
/// [`MAX_KEY_LEN`] bytes (a B-tree entry must stay under ~2.7 kB, and long
/// keys would bloat the index). Deterministic, so replicas agree.
fn db_key(key: &str) -> Cow<'_, str> {
    if key.len() <= MAX_KEY_LEN {
        return Cow::Borrowed(key);
    }
    let digest = sha2::Sha256::digest(key.as_bytes());
    Cow::Owned(format!("#sha256:{}", hex::encode(digest)))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).min(MAX_MS)
}

fn parse_claim(row: &tokio_postgres::Row, token: &ClaimToken) -> Result<Claim> {
    let get = |e: tokio_postgres::Error| {
        StoreError::new(StoreErrorKind::Backend, "unexpected claim row").with_source(e)
    };
    let kind: i32 = row.try_get(0).map_err(get)?;
    if kind == 0 {
        return Ok(Claim::Acquired(token.clone()));
    }
    let remaining: i64 = row.try_get(1).map_err(get)?;
    let status: i32 = row.try_get(2).map_err(get)?;
    let digest: Option<&[u8]> = row.try_get(3).map_err(get)?;
    let digest = digest
        .and_then(|d| Digest::try_from(d).ok())
        .ok_or_else(|| StoreError::new(StoreErrorKind::Config, "stored digest is not 32 bytes"))?;
    match kind {
        1 => Ok(Claim::InFlight {
            remaining: Duration::from_millis(u64::try_from(remaining).unwrap_or(0)),
            digest,
        }),
        2 => {
            let status = u16::try_from(status).map_err(|_| {
                StoreError::new(StoreErrorKind::Config, "stored status out of range")
            })?;
            let content_type: Option<String> = row.try_get(4).map_err(get)?;
            let body: Option<Vec<u8>> = row.try_get(5).map_err(get)?;
            Ok(Claim::Done(DoneRecord::new(status, digest).with_body(
                content_type,
                body.map(Bytes::from).unwrap_or_default(),
            )))
        }
        _ => Err(StoreError::new(
            StoreErrorKind::Backend,
            "unknown claim outcome",
        )),
    }
}

fn is_retryable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

fn map_pg(e: tokio_postgres::Error) -> StoreError {
    match classify(&e) {
        // A missing table, column or schema: the store is set up wrongly
        // (dropped table, migrate never ran); authentication or TLS checks
        // failing likewise.
        ErrorClass::Misconfigured => {
            let what = if e
                .as_db_error()
                .is_some_and(|db| matches!(db.code().code(), "42P01" | "42703" | "3F000"))
            {
                "the dedup table is missing or outdated (run migrate)".to_owned()
            } else {
                format!("PostgreSQL refused the store's setup: {}", describe(&e))
            };
            StoreError::new(StoreErrorKind::Config, what).with_source(e)
        }
        ErrorClass::Unavailable => {
            StoreError::new(StoreErrorKind::Unavailable, "PostgreSQL is unreachable").with_source(e)
        }
        _ => {
            StoreError::new(StoreErrorKind::Backend, "PostgreSQL returned an error").with_source(e)
        }
    }
}

impl DedupStore for PostgresStore {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        digest: &'a Digest,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim>> {
        Box::pin(self.claim_impl(key, digest, lease))
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        record: DoneRecord,
        retention: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.complete_impl(key, token, record, retention))
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a ClaimToken) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.release_impl(key, token))
    }

    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.renew_impl(key, token, lease))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_validated() {
        for ok in ["hookgate_dedup", "s.t", "_x1", "Webhooks.Dedup"] {
            assert!(Sql::new(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "1abc",
            "a.b.c",
            "a;drop table x",
            "a\"b",
            ".t",
            "s.",
            "a b",
            long.as_str(),
        ] {
            let err = Sql::new(bad).err().expect(bad);
            assert_eq!(err.kind(), StoreErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn bad_url_is_a_config_error() {
        let err = PostgresStore::new("postgres://host:notaport/db").unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Config);
    }

    #[test]
    fn long_keys_are_hashed() {
        assert_eq!(db_key("p:standard:msg_1"), "p:standard:msg_1");
        let long = "k".repeat(MAX_KEY_LEN + 1);
        let stored = db_key(&long);
        assert!(stored.starts_with("#sha256:") && stored.len() == 8 + 64);
        assert_ne!(db_key(&"k".repeat(MAX_KEY_LEN + 2)), stored);
    }

    #[test]
    fn durations_are_clamped() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), MAX_MS);
    }
}
