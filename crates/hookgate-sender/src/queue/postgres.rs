//! Postgres queue and transactional outbox (feature `postgres`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use hookgate_sender::{queue::PostgresQueue, Message, Queue};
//!
//! let queue = PostgresQueue::connect("postgres://postgres@127.0.0.1:5432/test")
//!     .await?
//!     .with_schema("webhooks")?;
//! queue.migrate().await?; // optional: the first operation does it too
//! queue.enqueue("orders", &Message::new("order.paid", r#"{"id":1}"#)).await?;
//! # Ok(()) }
//! ```
//!
//! # Tables
//!
//! In the configured schema (default `public`), each name starting with the
//! table prefix (default `hookgate_`):
//!
//! - `endpoints (id, config jsonb, disabled)`. **`config` holds the endpoint's
//!   secret strings** unless the queue has a keyring
//!   ([`with_keyring`](PostgresQueue::with_keyring), [`crate::seal`]), which
//!   seals them: grant access to this table as you would to the secrets.
//! - `endpoint_audit (seq, endpoint, at_ms, actor, change jsonb)`: the audit
//!   trail of endpoint changes ([`crate::audit`]), no secret values.
//! - `deliveries (endpoint, message_id, event_type, payload, created_at_ms,
//!   state, attempts, next_attempt_at, lease_token, lease_until, reason,
//!   reason_detail, finished_at)`, primary key `(endpoint, message_id)`. One
//!   row per key for its whole life: `state` is `scheduled`, `leased`,
//!   `held`, `delivered` or `dead` (a dead letter is a row in state `dead`,
//!   `finished_at` its time, `reason` its code). Partial indexes serve
//!   leasing (`next_attempt_at` of scheduled/leased rows) and DLQ paging
//!   (`(finished_at, endpoint, message_id)` of dead rows).
//! - `attempts (endpoint, message_id, n, at_ms, url, status, latency_ms,
//!   error)`: the history of a delivery, kept with it (removed when its dead
//!   letter is purged or its delivered row leaves the retention window).
//! - `endpoint_state (endpoint, name, version, value)`: the endpoints'
//!   shared resilience state (circuit breakers per URL, rate limiter,
//!   failure streak), one row per record, changed only by compare-and-set
//!   on `version` ([`Queue::swap_endpoint_state`]): a row, not leases
//!   carrying budget, because the limiter's bucket is a few numbers every
//!   worker updates in one short autocommit statement.
//!
//! Times are Unix milliseconds (`bigint`). Lease expiry and "due now" always
//! use the database clock, so workers on machines with skewed clocks agree.
//! The queue's sessions run with `statement_timeout` 30 s (unless the URL's
//! `options` set another), so a statement stuck behind a lock gives up on
//! the server too; a timed-out or cancelled statement (SQLSTATE 57014), too
//! many connections (53300) and a closed connection are `Unavailable`.
//! [`migrate`](PostgresQueue::migrate) creates what is missing and is
//! idempotent (an advisory lock serialises concurrent runs).
//!
//! # Leasing
//!
//! One statement takes a batch: the due rows are selected `FOR UPDATE SKIP
//! LOCKED`, so concurrent workers never wait on each other nor take the same
//! row, and each gets a fresh random token and one more counted attempt. A
//! leased row's `next_attempt_at` is set to its lease expiry, so a crashed
//! worker's delivery becomes due again (with that attempt spent). Every
//! [`settle`](Queue::settle) is one statement per transition that checks
//! the state and token (fencing) and records the attempt in the same
//! statement, whether or not the token still holds the lease.

use std::{sync::Arc, time::Duration};

use deadpool_postgres::{Pool, PoolError};
use std::sync::atomic::{AtomicBool, Ordering};

use hookgate_backend::postgres::{PgUrl, PoolOptions};
use hookgate_backend::ErrorClass;
use tokio::sync::Mutex;
use tokio_postgres::{GenericClient, Row};

use super::{
    Attempt, BoxFuture, DeadLetter, DeadReason, DeliveryKey, DeliveryState, DlqFilter, Enqueued,
    Job, LeaseToken, Leased, Page, Queue, QueueError, QueueErrorKind, QueueStats, Result,
    StateRecord, Transition, DEFAULT_DELIVERED_RETENTION,
};
use crate::{Endpoint, Message};

use super::codec;
use crate::seal::Keyring;

/// The database clock, in Unix milliseconds (`now()`: the start of the
/// statement's transaction; stable, so indexes apply).
const NOW_MS: &str = "(extract(epoch from now()) * 1000)::bigint";

/// Default pool size.
const DEFAULT_POOL_SIZE: usize = 16;
/// How long to wait for a connection (new or from the pool).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The sessions' `statement_timeout` unless the URL sets one (`options=-c
/// statement_timeout=..`); the migration lifts it for itself.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A [`Queue`] in PostgreSQL, shareable by many workers on many machines, with
/// a transactional outbox ([`enqueue_in`](Self::enqueue_in)). See the
/// [module docs](self) for the tables and the leasing scheme.
#[derive(Clone)]
pub struct PostgresQueue {
    pool: Pool,
    names: Arc<Names>,
    migrated: Arc<Migrated>,
    /// How long delivered keys are kept, milliseconds.
    retention_ms: i64,
    /// Seals endpoint credentials at rest ([`crate::seal`]).
    keys: Option<Arc<Keyring>>,
}

/// Whether this handle has run the migration (and a lock to run it once).
#[derive(Debug, Default)]
struct Migrated {
    done: AtomicBool,
    lock: Mutex<()>,
}

impl std::fmt::Debug for PostgresQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresQueue")
            .field("schema", &self.names.schema)
            .field("prefix", &self.names.prefix)
            .field("pool", &self.pool.status())
            .finish()
    }
}

/// Qualified table names, and the SQL built from them (each statement
/// formatted once per queue, then prepared once per pooled connection).
#[derive(Debug)]
struct Names {
    sql: std::sync::Mutex<std::collections::HashMap<&'static str, Arc<str>>>,
    schema: String,
    prefix: String,
    endpoints: String,
    deliveries: String,
    attempts: String,
    state: String,
    /// The endpoints' audit trail.
    audit: String,
}

impl Names {
    fn new(schema: &str, prefix: &str) -> Self {
        let t = |name: &str| format!("\"{schema}\".\"{prefix}{name}\"");
        Self {
            sql: std::sync::Mutex::default(),
            schema: schema.to_owned(),
            prefix: prefix.to_owned(),
            endpoints: t("endpoints"),
            deliveries: t("deliveries"),
            attempts: t("attempts"),
            state: t("endpoint_state"),
            audit: t("endpoint_audit"),
        }
    }
}

/// `name` is an identifier by the rule both crates share
/// ([`hookgate_backend::postgres::valid_identifier`]), and further lower
/// case and at most 40 bytes: a namespace is also a Redis key prefix (where
/// case matters, while Postgres folds unquoted names), and the table
/// suffixes need room.
fn valid_identifier(name: &str, allow_empty: bool) -> bool {
    if name.is_empty() {
        return allow_empty;
    }
    name.len() <= 40
        && !name.bytes().any(|b| b.is_ascii_uppercase())
        && hookgate_backend::postgres::valid_identifier(name)
}

fn invalid(message: impl Into<String>) -> QueueError {
    QueueError::new(QueueErrorKind::Config, message)
}

/// Classify a database error the way the dedup store does
/// ([`hookgate_backend::postgres::classify`]): connection trouble, overload
/// and timeouts are `Unavailable`; a missing table, authentication or a
/// failed TLS check is `Config`.
fn pg_error(context: &str, e: tokio_postgres::Error) -> QueueError {
    let kind = match hookgate_backend::postgres::classify(&e) {
        ErrorClass::Unavailable => QueueErrorKind::Unavailable,
        ErrorClass::Misconfigured => QueueErrorKind::Config,
        _ => QueueErrorKind::Backend,
    };
    // The driver's text (or the TLS check that failed) is in the message;
    // the error stays the source (printers like the CLI's skip a cause whose
    // text the line already holds).
    let what = hookgate_backend::postgres::describe(&e);
    QueueError::new(kind, format!("postgres: {context}: {what}")).with_source(e)
}

fn pool_error(e: PoolError) -> QueueError {
    match e {
        PoolError::Backend(e) => pg_error("connect", e),
        other => QueueError::new(QueueErrorKind::Unavailable, "postgres: no connection")
            .with_source(other),
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A fresh random lease token.
fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl PostgresQueue {
    /// Connect to `url` (`postgres://user@host:port/db?...`) with a pool of 16
    /// connections, using schema `public` and table prefix `hookgate_`.
    ///
    /// # Errors
    /// `Config` for a malformed URL; `Unavailable` when the server cannot
    /// be reached (the first connection is opened here, with a 5 s timeout).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with_pool_size(url, DEFAULT_POOL_SIZE).await
    }

    /// [`connect`](Self::connect) with a pool of `size` connections.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with_pool_size(url: &str, size: usize) -> Result<Self> {
        // libpq's sslmode/sslrootcert (TLS over rustls), one pool setup for
        // both crates.
        let pool = PgUrl::parse(url)
            .map_err(|e| invalid("postgres: malformed connection URL").with_source(e))?
            .pool(&PoolOptions {
                max_size: size.max(1),
                timeout: CONNECT_TIMEOUT,
                // The server gives up on a statement that runs away (a lease
                // stuck behind a lock, say) instead of applying it long after
                // the worker stopped waiting.
                statement_timeout: Some(STATEMENT_TIMEOUT),
                settings: Vec::new(),
                verify_on_checkout: false,
            })
            .map_err(|e| invalid("postgres: cannot build pool").with_source(e))?;
        // Open one connection now, so a wrong URL fails here.
        drop(pool.get().await.map_err(pool_error)?);
        Ok(Self {
            pool,
            names: Arc::new(Names::new("public", "hookgate_")),
            migrated: Arc::default(),
            retention_ms: millis(DEFAULT_DELIVERED_RETENTION),
            keys: None,
        })
    }

    /// Seal endpoint credentials under `keys` ([`crate::seal`]): new
    /// writes use its newest key, reads accept any of its keys.
    #[must_use]
    pub fn with_keyring(mut self, keys: Keyring) -> Self {
        self.keys = Some(Arc::new(keys));
        self
    }

    /// Use schema `name` (created if missing) instead of `public`.
    ///
    /// # Errors
    /// `Config` unless `name` is 1–40 characters of `a-z`, `0-9`, `_`, not
    /// starting with a digit.
    pub fn with_schema(self, name: &str) -> Result<Self> {
        if !valid_identifier(name, false) {
            return Err(invalid(format!(
                "postgres: invalid schema name {:?}",
                name.chars().take(64).collect::<String>()
            )));
        }
        let prefix = self.names.prefix.clone();
        Ok(self.renamed(name, &prefix))
    }

    /// Start every table name with `prefix` instead of `hookgate_`.
    ///
    /// # Errors
    /// `Config` unless `prefix` is 0–40 characters of `a-z`, `0-9`, `_`, not
    /// starting with a digit.
    pub fn with_table_prefix(self, prefix: &str) -> Result<Self> {
        if !valid_identifier(prefix, true) {
            return Err(invalid(format!(
                "postgres: invalid table prefix {:?}",
                prefix.chars().take(64).collect::<String>()
            )));
        }
        let schema = self.names.schema.clone();
        Ok(self.renamed(&schema, prefix))
    }

    fn renamed(self, schema: &str, prefix: &str) -> Self {
        Self {
            pool: self.pool,
            names: Arc::new(Names::new(schema, prefix)),
            migrated: Arc::default(),
            retention_ms: self.retention_ms,
            keys: self.keys,
        }
    }

    /// Keep delivered keys this long (default
    /// [`DEFAULT_DELIVERED_RETENTION`]): enqueueing one again within it is a
    /// no-op, after it a new delivery.
    #[must_use]
    pub fn with_delivered_retention(mut self, retention: Duration) -> Self {
        self.retention_ms = millis(retention);
        self
    }

    /// The schema in use.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.names.schema
    }

    /// Whether this queue's tables exist (its schema was migrated), without
    /// creating anything: read-only tools check it first so that looking
    /// at a namespace that does not exist never creates it.
    ///
    /// # Errors
    /// `Unavailable` or `Backend` from the database.
    pub async fn exists(&self) -> Result<bool> {
        let conn = self.pool.get().await.map_err(pool_error)?;
        let row = conn
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&self.names.deliveries],
            )
            .await
            .map_err(|e| pg_error("exists", e))?;
        Ok(row.get(0))
    }

    /// Create the schema, tables and indexes if missing. Idempotent; every
    /// operation runs it once first, so calling it is optional.
    ///
    /// # Errors
    /// `Unavailable` or `Backend` from the database.
    pub async fn migrate(&self) -> Result<()> {
        if self.migrated.done.load(Ordering::Acquire) {
            return Ok(());
        }
        let _guard = self.migrated.lock.lock().await;
        if !self.migrated.done.load(Ordering::Acquire) {
            self.run_migration().await?;
            self.migrated.done.store(true, Ordering::Release);
        }
        Ok(())
    }

    async fn run_migration(&self) -> Result<()> {
        let n = &self.names;
        let (schema, p) = (&n.schema, &n.prefix);
        let old_dead = format!("\"{schema}\".\"{p}dead\"");
        let ddl = format!(
            r#"
            SELECT pg_advisory_xact_lock(hashtext('hookgate-migrate:{schema}.{p}'));
            CREATE SCHEMA IF NOT EXISTS "{schema}";
            CREATE TABLE IF NOT EXISTS {endpoints} (
                id text COLLATE "C" PRIMARY KEY,
                config jsonb NOT NULL,
                disabled boolean NOT NULL DEFAULT false
            );
            CREATE TABLE IF NOT EXISTS {deliveries} (
                endpoint text COLLATE "C" NOT NULL,
                message_id text COLLATE "C" NOT NULL,
                event_type text NOT NULL,
                payload bytea NOT NULL,
                created_at_ms bigint NOT NULL,
                state text NOT NULL DEFAULT 'scheduled',
                attempts integer NOT NULL DEFAULT 0,
                next_attempt_at bigint NOT NULL,
                lease_token text,
                lease_until bigint,
                reason text,
                reason_detail text,
                finished_at bigint,
                PRIMARY KEY (endpoint, message_id)
            );
            ALTER TABLE {deliveries}
                ADD COLUMN IF NOT EXISTS state text NOT NULL DEFAULT 'scheduled',
                ADD COLUMN IF NOT EXISTS reason text,
                ADD COLUMN IF NOT EXISTS reason_detail text,
                ADD COLUMN IF NOT EXISTS finished_at bigint;
            CREATE INDEX IF NOT EXISTS "{p}deliveries_ready" ON {deliveries} (next_attempt_at)
                WHERE state IN ('scheduled', 'leased');
            CREATE INDEX IF NOT EXISTS "{p}deliveries_dead" ON {deliveries} (finished_at, endpoint, message_id)
                WHERE state = 'dead';
            CREATE INDEX IF NOT EXISTS "{p}deliveries_dead_endpoint" ON {deliveries} (endpoint, finished_at, message_id)
                WHERE state = 'dead';
            CREATE INDEX IF NOT EXISTS "{p}deliveries_held" ON {deliveries} (endpoint)
                WHERE state = 'held';
            CREATE TABLE IF NOT EXISTS {audit} (
                seq bigserial PRIMARY KEY,
                endpoint text COLLATE "C" NOT NULL,
                at_ms bigint NOT NULL,
                actor text NOT NULL,
                change jsonb NOT NULL
            );
            CREATE INDEX IF NOT EXISTS "{p}endpoint_audit_endpoint" ON {audit} (endpoint, seq);
            CREATE INDEX IF NOT EXISTS "{p}endpoint_audit_at" ON {audit} (at_ms);
            CREATE TABLE IF NOT EXISTS {attempts} (
                endpoint text COLLATE "C" NOT NULL,
                message_id text COLLATE "C" NOT NULL,
                n integer NOT NULL,
                at_ms bigint NOT NULL,
                url text NOT NULL,
                status integer,
                latency_ms bigint NOT NULL,
                error text,
                PRIMARY KEY (endpoint, message_id, n)
            );
            CREATE TABLE IF NOT EXISTS {state} (
                endpoint text COLLATE "C" NOT NULL,
                name text COLLATE "C" NOT NULL,
                version bigint NOT NULL,
                value text NOT NULL,
                PRIMARY KEY (endpoint, name)
            );
            -- Before explicit states, dead letters had a table of their own:
            -- move them in (reason text kept as the detail of `other`).
            DO $migrate$ BEGIN
                IF to_regclass('{old_dead_lit}') IS NOT NULL THEN
                    INSERT INTO {deliveries} (endpoint, message_id, event_type, payload, created_at_ms,
                                              state, attempts, next_attempt_at, reason, reason_detail,
                                              finished_at)
                    SELECT endpoint, message_id, event_type, payload, created_at_ms,
                           'dead', 0, 0, 'other', reason, dead_at FROM {old_dead}
                    ON CONFLICT (endpoint, message_id) DO NOTHING;
                    DROP TABLE {old_dead};
                END IF;
            END $migrate$;
            "#,
            endpoints = n.endpoints,
            deliveries = n.deliveries,
            attempts = n.attempts,
            state = n.state,
            audit = n.audit,
            old_dead = old_dead,
            old_dead_lit = old_dead.replace('\'', "''"),
        );
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("migrate", e))?;
        tx.batch_execute(&format!("SET LOCAL statement_timeout = 0;\n{ddl}"))
            .await
            .map_err(|e| pg_error("migrate", e))?;
        tx.commit().await.map_err(|e| pg_error("migrate", e))
    }

    /// A pooled connection, after making sure the tables exist.
    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.migrate().await?;
        self.pool.get().await.map_err(pool_error)
    }

    /// Enqueue `message` for `endpoint` through `client` — typically the
    /// caller's own open transaction (the transactional outbox): the delivery
    /// commits or rolls back with the caller's data. Enqueueing a key that
    /// exists in any state is a no-op ([`Enqueued::Exists`]). Due now
    /// (database clock, at insert).
    ///
    /// `client` is anything implementing `tokio_postgres::GenericClient`: a
    /// `Transaction`, a `Client`, or `&*tx` for a `deadpool_postgres`
    /// transaction. It must reach the same database as this queue; the tables
    /// are created first if missing (on a pooled connection of the queue, so
    /// create them before taking locks the migration could wait on).
    ///
    /// ```no_run
    /// # async fn demo(queue: hookgate_sender::queue::PostgresQueue,
    /// #               client: &mut tokio_postgres::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use hookgate_sender::Message;
    /// let tx = client.transaction().await?;
    /// tx.execute("UPDATE orders SET paid = true WHERE id = $1", &[&42i64]).await?;
    /// queue.enqueue_in(&tx, "orders", &Message::new("order.paid", r#"{"id":42}"#)).await?;
    /// tx.commit().await?; // the webhook is queued if and only if this commits
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Unavailable` or `Backend` from the database.
    pub async fn enqueue_in<C: GenericClient + Sync>(
        &self,
        client: &C,
        endpoint: &str,
        message: &Message,
    ) -> Result<Enqueued> {
        self.migrate().await?;
        let rows = client
            .query(
                &*self.enqueue_sql(),
                &[
                    &endpoint,
                    &message.id,
                    &message.event_type,
                    &message.payload.as_ref(),
                    &message.created_at_ms,
                    &self.retention_ms,
                ],
            )
            .await
            .map_err(|e| pg_error("enqueue", e))?;
        Self::enqueued(&rows)
    }

    /// The statement `name`, built by `build` the first time.
    fn sql(&self, name: &'static str, build: impl FnOnce() -> String) -> Arc<str> {
        let mut cache = self
            .names
            .sql
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .entry(name)
            .or_insert_with(|| Arc::from(build()))
            .clone()
    }

    /// One statement: insert the delivery unless the key exists; a delivered
    /// key past the retention window (`$6` ms) starts afresh, its old history
    /// dropped. Returns `new` or the existing state.
    fn enqueue_sql(&self) -> Arc<str> {
        let (d, a) = (&self.names.deliveries, &self.names.attempts);
        self.sql("enqueue", || format!(
            "WITH old AS (SELECT 1 FROM {d} WHERE endpoint = $1 AND message_id = $2
                             AND state = 'delivered' AND finished_at <= {NOW_MS} - $6),
                  h AS (DELETE FROM {a} WHERE endpoint = $1 AND message_id = $2
                           AND EXISTS (SELECT 1 FROM old)),
                  ins AS (INSERT INTO {d} AS q (endpoint, message_id, event_type, payload, created_at_ms,
                                                next_attempt_at, state)
                          VALUES ($1, $2, $3, $4, $5, {NOW_MS}, 'scheduled')
                          ON CONFLICT (endpoint, message_id) DO UPDATE
                             SET event_type = excluded.event_type, payload = excluded.payload,
                                 created_at_ms = excluded.created_at_ms, state = 'scheduled',
                                 attempts = 0, next_attempt_at = excluded.next_attempt_at,
                                 lease_token = NULL, lease_until = NULL, reason = NULL,
                                 reason_detail = NULL, finished_at = NULL
                           WHERE q.state = 'delivered' AND q.finished_at <= {NOW_MS} - $6
                          RETURNING 'new'::text AS s)
             SELECT s FROM ins
             UNION ALL
             SELECT state FROM {d} WHERE endpoint = $1 AND message_id = $2
                AND NOT EXISTS (SELECT 1 FROM ins)"
        ))
    }

    /// The answer of [`enqueue_sql`](Self::enqueue_sql).
    fn enqueued(rows: &[Row]) -> Result<Enqueued> {
        let Some(row) = rows.first() else {
            // Inserted by a concurrent transaction that committed after
            // this statement's snapshot: it exists, freshly scheduled.
            return Ok(Enqueued::Exists(DeliveryState::Scheduled));
        };
        let s: String = get(row, 0)?;
        if s == "new" {
            return Ok(Enqueued::New);
        }
        Ok(Enqueued::Exists(parse_state(&s)?))
    }

    /// [`Queue::enqueue`]: on a pooled connection, with a cached statement.
    async fn do_enqueue(&self, endpoint: &str, message: &Message) -> Result<Enqueued> {
        let client = self.client().await?;
        let stmt = prepare(&client, &self.enqueue_sql()).await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &endpoint,
                    &message.id,
                    &message.event_type,
                    &message.payload.as_ref(),
                    &message.created_at_ms,
                    &self.retention_ms,
                ],
            )
            .await
            .map_err(|e| pg_error("enqueue", e))?;
        Self::enqueued(&rows)
    }
    /// Remove every table this queue created (and the schema when it is
    /// empty and not `public`). For tests and tear-down.
    ///
    /// # Errors
    /// `Unavailable` or `Backend` from the database.
    pub async fn drop_tables(&self) -> Result<()> {
        let n = &self.names;
        let client = self.pool.get().await.map_err(pool_error)?;
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {}, {}, {}, {}",
                n.endpoints, n.deliveries, n.attempts, n.state
            ))
            .await
            .map_err(|e| pg_error("drop tables", e))?;
        if n.schema != "public" {
            let left: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
                      WHERE s.nspname = $1",
                    &[&n.schema],
                )
                .await
                .map_err(|e| pg_error("drop tables", e))
                .and_then(|row| get(&row, 0))?;
            if left == 0 {
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" RESTRICT", n.schema))
                    .await
                    .map_err(|e| pg_error("drop schema", e))?;
            }
        }
        self.migrated.done.store(false, Ordering::Release);
        Ok(())
    }

    async fn do_lease(&self, max: usize, lease: Duration) -> Result<Vec<Leased>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let sql = self.lease_sql();
        let client = self.client().await?;
        let stmt = prepare(&client, &sql).await?;
        let rows = client
            .query(&stmt, &[&to_i64(max as u64), &millis(lease), &new_token()])
            .await
            .map_err(|e| pg_error("lease", e))?;
        rows.iter().map(leased_from_row).collect()
    }

    /// The plan of the lease statement for `max` deliveries as the server
    /// runs it now: `EXPLAIN (ANALYZE, BUFFERS)` inside a transaction that is
    /// rolled back, so nothing is leased. For operators checking that
    /// leasing stays an index scan as the table grows (BENCHMARKS.md shows
    /// it at a million rows; `scripts/explain-queue.sh` reproduces it).
    ///
    /// # Errors
    /// `Unavailable` or `Backend` from the database.
    pub async fn explain_lease(&self, max: usize) -> Result<String> {
        let sql = self.lease_sql();
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("explain lease", e))?;
        let rows = tx
            .query(
                &format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"),
                &[
                    &to_i64(max as u64),
                    &millis(Duration::from_secs(30)),
                    &new_token(),
                ],
            )
            .await
            .map_err(|e| pg_error("explain lease", e))?;
        tx.rollback()
            .await
            .map_err(|e| pg_error("explain lease", e))?;
        Ok(rows
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// The lease statement: `$1` how many, `$2` the lease in ms, `$3` a token prefix.
    fn lease_sql(&self) -> Arc<str> {
        let d = &self.names.deliveries;
        self.sql("do_lease", || {
            format!(
                "UPDATE {d} AS q
                SET state = 'leased',
                    attempts = q.attempts + 1,
                    lease_token = $3 || '.' || s.rn,
                    lease_until = s.now + $2,
                    next_attempt_at = s.now + $2
               FROM (SELECT endpoint, message_id, next_attempt_at AS due, {NOW_MS} AS now,
                            row_number() OVER () AS rn
                       FROM (SELECT endpoint, message_id, next_attempt_at FROM {d}
                              WHERE state IN ('scheduled', 'leased') AND next_attempt_at <= {NOW_MS}
                              ORDER BY next_attempt_at
                              LIMIT $1
                              FOR UPDATE SKIP LOCKED) AS due_rows) AS s
              WHERE q.endpoint = s.endpoint AND q.message_id = s.message_id
          RETURNING q.endpoint, q.message_id, q.event_type, q.payload, q.created_at_ms,
                    q.attempts, s.due, q.lease_token"
            )
        })
    }

    async fn do_lease_one(&self, key: &DeliveryKey, lease: Duration) -> Result<Option<Leased>> {
        let d = &self.names.deliveries;
        let sql = self.sql("do_lease_one", || {
            format!(
                "UPDATE {d} AS q
                SET state = 'leased', attempts = q.attempts + 1, lease_token = $4,
                    lease_until = {NOW_MS} + $3, next_attempt_at = {NOW_MS} + $3
               FROM (SELECT next_attempt_at AS due FROM {d}
                      WHERE endpoint = $1 AND message_id = $2
                        AND (state = 'scheduled' OR (state = 'leased' AND lease_until <= {NOW_MS}))
                      FOR UPDATE) AS s
              WHERE q.endpoint = $1 AND q.message_id = $2
          RETURNING q.endpoint, q.message_id, q.event_type, q.payload, q.created_at_ms,
                    q.attempts, s.due, q.lease_token"
            )
        });
        let client = self.client().await?;
        let stmt = prepare(&client, &sql).await?;
        let row = client
            .query_opt(
                &stmt,
                &[&key.endpoint, &key.message_id, &millis(lease), &new_token()],
            )
            .await
            .map_err(|e| pg_error("lease_one", e))?;
        row.map(|row| leased_from_row(&row)).transpose()
    }

    /// The fenced statement for one kind of transition. Parameters: `$1`,
    /// `$2` the key, `$3` the token, `$4..$8` the attempt, `$9` whether
    /// there is one, then the transition's own (`$10`, `$11`). The attempt is
    /// recorded whenever the delivery exists; the state changes only when
    /// the token holds the lease.
    fn settle_sql(&self, name: &'static str, set: &str) -> Arc<str> {
        let (d, a) = (&self.names.deliveries, &self.names.attempts);
        self.sql(name, || format!(
            "WITH k AS (UPDATE {d} SET {set}, lease_token = NULL, lease_until = NULL
                         WHERE endpoint = $1 AND message_id = $2
                           AND state = 'leased' AND lease_token = $3
                     RETURNING 1),
                  a AS (INSERT INTO {a} (endpoint, message_id, n, at_ms, url, status, latency_ms, error)
                        SELECT $1, $2,
                               (SELECT coalesce(max(n), 0) + 1 FROM {a}
                                 WHERE endpoint = $1 AND message_id = $2),
                               $4, $5, $6, $7, $8
                         WHERE $9 AND EXISTS (SELECT 1 FROM {d} WHERE endpoint = $1 AND message_id = $2))
             SELECT count(*) FROM k"
        ))
    }

    async fn do_settle(
        &self,
        key: &DeliveryKey,
        token: &LeaseToken,
        attempt: Option<&Attempt>,
        transition: &Transition,
    ) -> Result<bool> {
        let refund = "attempts = greatest(attempts - 1, 0)";
        let name = match transition {
            Transition::Delivered => "settle_delivered",
            Transition::Retry { .. } => "settle_retry",
            Transition::Defer { .. } => "settle_defer",
            Transition::Interrupted => "settle_interrupted",
            Transition::Hold => "settle_hold",
            Transition::Dead(_) => "settle_dead",
        };
        let (set, extra): (
            String,
            Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>,
        ) = match transition {
            Transition::Delivered => (
                format!("state = 'delivered', finished_at = {NOW_MS}"),
                vec![],
            ),
            Transition::Retry { delay } => (
                format!("state = 'scheduled', next_attempt_at = {NOW_MS} + $10"),
                vec![Box::new(millis(*delay))],
            ),
            Transition::Defer { delay, .. } => (
                format!("state = 'scheduled', next_attempt_at = {NOW_MS} + $10, {refund}"),
                vec![Box::new(millis(*delay))],
            ),
            Transition::Interrupted => (
                format!("state = 'scheduled', next_attempt_at = {NOW_MS}, {refund}"),
                vec![],
            ),
            Transition::Hold => (format!("state = 'held', {refund}"), vec![]),
            Transition::Dead(reason) => (
                format!(
                    "state = 'dead', reason = $10, reason_detail = $11, finished_at = {NOW_MS}"
                ),
                vec![
                    Box::new(reason.code().to_owned()),
                    Box::new(reason.detail().map(str::to_owned)),
                ],
            ),
        };
        let sql = self.settle_sql(name, &set);
        let empty = Attempt {
            at_ms: 0,
            url: String::new(),
            status: None,
            latency_ms: 0,
            error: None,
        };
        let a = attempt.unwrap_or(&empty);
        let (status, latency) = attempt_params(a);
        let has_attempt = attempt.is_some();
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
            &key.endpoint,
            &key.message_id,
            &token.0,
            &a.at_ms,
            &a.url,
            &status,
            &latency,
            &a.error,
            &has_attempt,
        ];
        for p in &extra {
            params.push(p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync));
        }
        let client = self.client().await?;
        let stmt = prepare(&client, &sql).await?;
        // Two writers may number an attempt the same at once (the old lease
        // holder and the new one): the loser tries again.
        let mut tries = 0;
        loop {
            match client.query_one(&stmt, &params).await {
                Ok(row) => return Ok(get::<i64>(&row, 0)? > 0),
                Err(e) if tries < 3 && is_unique_violation(&e) => tries += 1,
                Err(e) => return Err(pg_error("settle", e)),
            }
        }
    }

    async fn do_dead_letter_held(&self, endpoint: &str) -> Result<u64> {
        let sql = self.sql("do_dead_letter_held", || {
            format!(
                "UPDATE {} SET state = 'dead', reason = 'endpoint_disabled', reason_detail = NULL,
                        finished_at = {NOW_MS}
              WHERE endpoint = $1 AND state = 'held'",
                self.names.deliveries
            )
        });
        let client = self.client().await?;
        client
            .execute(&prepare(&client, &sql).await?, &[&endpoint])
            .await
            .map_err(|e| pg_error("dead_letter_held", e))
    }

    async fn do_release_held(&self, endpoint: &str) -> Result<u64> {
        let sql = self.sql("do_release_held", || {
            format!(
                "UPDATE {} SET state = 'scheduled', next_attempt_at = {NOW_MS}
              WHERE endpoint = $1 AND state = 'held'",
                self.names.deliveries
            )
        });
        let client = self.client().await?;
        client
            .execute(&prepare(&client, &sql).await?, &[&endpoint])
            .await
            .map_err(|e| pg_error("release_held", e))
    }

    async fn do_state(&self, key: &DeliveryKey) -> Result<Option<DeliveryState>> {
        let sql = self.sql("do_state", || {
            format!(
                "SELECT state FROM {} WHERE endpoint = $1 AND message_id = $2",
                self.names.deliveries
            )
        });
        let client = self.client().await?;
        let row = client
            .query_opt(
                &prepare(&client, &sql).await?,
                &[&key.endpoint, &key.message_id],
            )
            .await
            .map_err(|e| pg_error("state", e))?;
        row.map(|r| parse_state(&get::<String>(&r, 0)?)).transpose()
    }

    async fn do_add_dead_letter(&self, dead: &DeadLetter) -> Result<bool> {
        let n = &self.names;
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("add_dead_letter", e))?;
        let k = &dead.key;
        let attempts = i32::try_from(dead.attempts.len()).unwrap_or(i32::MAX);
        let written = tx
            .query_opt(
                &format!(
                    "INSERT INTO {} AS q (endpoint, message_id, event_type, payload, created_at_ms,
                                         state, attempts, next_attempt_at, reason, reason_detail, finished_at)
                     VALUES ($1, $2, $3, $4, $5, 'dead', $6, 0, $7, $8, $9)
                     ON CONFLICT (endpoint, message_id) DO UPDATE
                        SET event_type = excluded.event_type, payload = excluded.payload,
                            created_at_ms = excluded.created_at_ms, attempts = excluded.attempts,
                            reason = excluded.reason, reason_detail = excluded.reason_detail,
                            finished_at = excluded.finished_at
                      WHERE q.state = 'dead'
                     RETURNING 1",
                    n.deliveries
                ),
                &[
                    &k.endpoint,
                    &k.message_id,
                    &dead.message.event_type,
                    &dead.message.payload.as_ref(),
                    &dead.message.created_at_ms,
                    &attempts,
                    &dead.reason.code(),
                    &dead.reason.detail(),
                    &dead.dead_at_ms,
                ],
            )
            .await
            .map_err(|e| pg_error("add_dead_letter", e))?;
        if written.is_none() {
            return Ok(false);
        }
        tx.execute(
            &format!(
                "DELETE FROM {} WHERE endpoint = $1 AND message_id = $2",
                n.attempts
            ),
            &[&k.endpoint, &k.message_id],
        )
        .await
        .map_err(|e| pg_error("add_dead_letter", e))?;
        let insert = format!(
            "INSERT INTO {} (endpoint, message_id, n, at_ms, url, status, latency_ms, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            n.attempts
        );
        for (i, a) in dead.attempts.iter().enumerate() {
            let (status, latency) = attempt_params(a);
            let n = i32::try_from(i + 1).unwrap_or(i32::MAX);
            tx.execute(
                &insert,
                &[
                    &k.endpoint,
                    &k.message_id,
                    &n,
                    &a.at_ms,
                    &a.url,
                    &status,
                    &latency,
                    &a.error,
                ],
            )
            .await
            .map_err(|e| pg_error("add_dead_letter", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| pg_error("add_dead_letter", e))?;
        Ok(true)
    }

    /// Dead letters from `rows` (columns as [`DEAD_COLUMNS`]), with their attempts.
    async fn with_attempts(
        &self,
        client: &deadpool_postgres::Object,
        rows: &[Row],
    ) -> Result<Vec<DeadLetter>> {
        let mut dead = rows
            .iter()
            .map(|row| {
                let code: Option<String> = get(row, 5)?;
                let detail: Option<String> = get(row, 6)?;
                Ok(DeadLetter {
                    key: DeliveryKey {
                        endpoint: get(row, 0)?,
                        message_id: get(row, 1)?,
                    },
                    message: Message {
                        id: get(row, 1)?,
                        event_type: get(row, 2)?,
                        payload: get::<Vec<u8>>(row, 3)?.into(),
                        created_at_ms: get(row, 4)?,
                    },
                    attempts: Vec::new(),
                    reason: DeadReason::from_parts(
                        code.as_deref().unwrap_or("other"),
                        detail.as_deref(),
                    ),
                    dead_at_ms: get::<Option<i64>>(row, 7)?.unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if dead.is_empty() {
            return Ok(dead);
        }
        let endpoints: Vec<&str> = dead.iter().map(|d| d.key.endpoint.as_str()).collect();
        let ids: Vec<&str> = dead.iter().map(|d| d.key.message_id.as_str()).collect();
        let sql = self.sql("with_attempts", || {
            format!(
                "SELECT endpoint, message_id, at_ms, url, status, latency_ms, error FROM {}
              WHERE (endpoint, message_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
              ORDER BY endpoint, message_id, n",
                self.names.attempts
            )
        });
        let rows = client
            .query(&prepare(client, &sql).await?, &[&endpoints, &ids])
            .await
            .map_err(|e| pg_error("load attempts", e))?;
        let index: std::collections::HashMap<(String, String), usize> = dead
            .iter()
            .enumerate()
            .map(|(i, d)| ((d.key.endpoint.clone(), d.key.message_id.clone()), i))
            .collect();
        for row in &rows {
            let key: (String, String) = (get(row, 0)?, get(row, 1)?);
            if let Some(&i) = index.get(&key) {
                let status: Option<i32> = get(row, 4)?;
                dead[i].attempts.push(Attempt {
                    at_ms: get(row, 2)?,
                    url: get(row, 3)?,
                    status: status.and_then(|s| u16::try_from(s).ok()),
                    latency_ms: u64::try_from(get::<i64>(row, 5)?).unwrap_or(0),
                    error: get(row, 6)?,
                });
            }
        }
        Ok(dead)
    }

    async fn do_list_dead(&self, filter: &DlqFilter, page: &Page) -> Result<Vec<DeadLetter>> {
        if page.limit == 0 {
            return Ok(Vec::new());
        }
        let (after_at, after_ep, after_id) = match &page.after {
            Some((at, key)) => (
                Some(*at),
                Some(key.endpoint.as_str()),
                Some(key.message_id.as_str()),
            ),
            None => (None, None, None),
        };
        let sql = self.sql("do_list_dead", || format!(
            "SELECT {DEAD_COLUMNS} FROM {x}
              WHERE state = 'dead'
                AND ($1::text IS NULL OR endpoint = $1)
                AND ($2::bigint IS NULL OR finished_at >= $2)
                AND ($3::bigint IS NULL OR finished_at < $3)
                AND ($4::bigint IS NULL OR (finished_at, endpoint, message_id) > ($4, $5::text, $6::text))
              ORDER BY finished_at, endpoint, message_id
              LIMIT $7",
            x = self.names.deliveries
        ));
        let client = self.client().await?;
        let rows = client
            .query(
                &prepare(&client, &sql).await?,
                &[
                    &filter.endpoint,
                    &filter.since_ms,
                    &filter.until_ms,
                    &after_at,
                    &after_ep,
                    &after_id,
                    &to_i64(page.limit as u64),
                ],
            )
            .await
            .map_err(|e| pg_error("list_dead", e))?;
        self.with_attempts(&client, &rows).await
    }

    async fn do_get_dead(&self, key: &DeliveryKey) -> Result<Option<DeadLetter>> {
        let sql = self.sql("do_get_dead", || format!(
            "SELECT {DEAD_COLUMNS} FROM {} WHERE endpoint = $1 AND message_id = $2 AND state = 'dead'",
            self.names.deliveries
        ));
        let client = self.client().await?;
        let rows = client
            .query(
                &prepare(&client, &sql).await?,
                &[&key.endpoint, &key.message_id],
            )
            .await
            .map_err(|e| pg_error("get_dead", e))?;
        Ok(self.with_attempts(&client, &rows).await?.pop())
    }

    async fn do_replay_dead(&self, key: &DeliveryKey) -> Result<bool> {
        // The attempt history stays (a second dead letter shows both runs);
        // the attempt count starts again at zero.
        let sql = self.sql("do_replay_dead", || {
            format!(
                "UPDATE {} SET state = 'scheduled', attempts = 0, next_attempt_at = {NOW_MS},
                           reason = NULL, reason_detail = NULL, finished_at = NULL
              WHERE endpoint = $1 AND message_id = $2 AND state = 'dead'",
                self.names.deliveries,
            )
        });
        let client = self.client().await?;
        let n = client
            .execute(
                &prepare(&client, &sql).await?,
                &[&key.endpoint, &key.message_id],
            )
            .await
            .map_err(|e| pg_error("replay_dead", e))?;
        Ok(n > 0)
    }

    async fn do_purge_dead(&self, key: &DeliveryKey) -> Result<bool> {
        let sql = self.sql("do_purge_dead", || {
            format!(
            "WITH x AS (DELETE FROM {d} WHERE endpoint = $1 AND message_id = $2 AND state = 'dead'
                     RETURNING endpoint, message_id),
                  h AS (DELETE FROM {a} USING x
                         WHERE {a}.endpoint = x.endpoint AND {a}.message_id = x.message_id)
             SELECT count(*) FROM x",
            a = self.names.attempts,
            d = self.names.deliveries,
        )
        });
        let client = self.client().await?;
        let row = client
            .query_one(
                &prepare(&client, &sql).await?,
                &[&key.endpoint, &key.message_id],
            )
            .await
            .map_err(|e| pg_error("purge_dead", e))?;
        Ok(get::<i64>(&row, 0)? > 0)
    }

    async fn do_stats(&self) -> Result<QueueStats> {
        let sql = self.sql("do_stats", || format!(
            "SELECT count(*) FILTER (WHERE state = 'scheduled' OR (state = 'leased' AND lease_until <= {NOW_MS})),
                    count(*) FILTER (WHERE state = 'leased' AND lease_until > {NOW_MS}),
                    count(*) FILTER (WHERE state = 'held'),
                    count(*) FILTER (WHERE state = 'delivered'),
                    count(*) FILTER (WHERE state = 'dead')
               FROM {d}",
            d = self.names.deliveries,
        ));
        let client = self.client().await?;
        let row = client
            .query_one(&prepare(&client, &sql).await?, &[])
            .await
            .map_err(|e| pg_error("stats", e))?;
        let count = |i| get::<i64>(&row, i).map(|n| u64::try_from(n).unwrap_or(0));
        Ok(QueueStats {
            scheduled: count(0)?,
            leased: count(1)?,
            held: count(2)?,
            delivered: count(3)?,
            dead: count(4)?,
        })
    }
    async fn do_prune(&self, dead_retention: Option<Duration>, max: usize) -> Result<u64> {
        let (d, a) = (&self.names.deliveries, &self.names.attempts);
        let sql = self.sql("do_prune", || {
            format!(
                "WITH x AS (DELETE FROM {d} WHERE ctid IN (
                          SELECT ctid FROM {d}
                           WHERE (state = 'delivered' AND finished_at <= {NOW_MS} - $1)
                              OR ($2::bigint IS NOT NULL AND state = 'dead'
                                  AND finished_at <= {NOW_MS} - $2)
                           LIMIT $3)
                     RETURNING endpoint, message_id),
                  h AS (DELETE FROM {a} USING x
                         WHERE {a}.endpoint = x.endpoint AND {a}.message_id = x.message_id)
             SELECT count(*) FROM x"
            )
        });
        let client = self.client().await?;
        let row = client
            .query_one(
                &prepare(&client, &sql).await?,
                &[
                    &self.retention_ms,
                    &dead_retention.map(millis),
                    &to_i64(max as u64),
                ],
            )
            .await
            .map_err(|e| pg_error("prune", e))?;
        Ok(u64::try_from(get::<i64>(&row, 0)?).unwrap_or(0))
    }

    async fn do_rescue(&self, max: usize, lease: Duration) -> Result<Vec<Leased>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let d = &self.names.deliveries;
        let sql = self.sql("do_rescue", || {
            format!(
                "UPDATE {d} AS q
                SET lease_token = $3 || '.' || s.rn,
                    lease_until = s.now + $2,
                    next_attempt_at = s.now + $2
               FROM (SELECT endpoint, message_id, next_attempt_at AS due, {NOW_MS} AS now,
                            row_number() OVER () AS rn
                       FROM (SELECT endpoint, message_id, next_attempt_at FROM {d}
                              WHERE state = 'leased' AND lease_until <= {NOW_MS}
                              ORDER BY lease_until
                              LIMIT $1
                              FOR UPDATE SKIP LOCKED) AS expired) AS s
              WHERE q.endpoint = s.endpoint AND q.message_id = s.message_id
          RETURNING q.endpoint, q.message_id, q.event_type, q.payload, q.created_at_ms,
                    q.attempts, s.due, q.lease_token"
            )
        });
        let client = self.client().await?;
        let rows = client
            .query(
                &prepare(&client, &sql).await?,
                &[&to_i64(max as u64), &millis(lease), &new_token()],
            )
            .await
            .map_err(|e| pg_error("rescue", e))?;
        rows.iter().map(leased_from_row).collect()
    }

    async fn do_put_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        let config = codec::endpoint_to_json(endpoint, self.keys.as_deref())?;
        let sql = self.sql("do_put_endpoint", || {
            format!(
                "INSERT INTO {} (id, config, disabled) VALUES ($1, $2::text::jsonb, $3)
             ON CONFLICT (id) DO UPDATE SET config = excluded.config",
                self.names.endpoints
            )
        });
        let client = self.client().await?;
        client
            .execute(
                &prepare(&client, &sql).await?,
                &[&endpoint.id, &config, &endpoint.disabled],
            )
            .await
            .map_err(|e| pg_error("put_endpoint", e))?;
        Ok(())
    }

    async fn do_get_endpoint(&self, id: &str) -> Result<Option<Endpoint>> {
        let sql = self.sql("do_get_endpoint", || {
            format!(
                "SELECT config::text, disabled FROM {} WHERE id = $1",
                self.names.endpoints
            )
        });
        let client = self.client().await?;
        let row = client
            .query_opt(&prepare(&client, &sql).await?, &[&id])
            .await
            .map_err(|e| pg_error("get_endpoint", e))?;
        match row {
            None => Ok(None),
            Some(row) => {
                let config: String = get(&row, 0)?;
                // The row's id is authoritative (and the one sealed data is bound to).
                codec::endpoint_from_json(&config, id, get(&row, 1)?, self.keys.as_deref())
                    .map(Some)
            }
        }
    }

    async fn do_list_endpoints(&self) -> Result<Vec<Endpoint>> {
        let sql = self.sql("do_list_endpoints", || {
            format!(
                "SELECT id, config::text, disabled FROM {} ORDER BY id",
                self.names.endpoints
            )
        });
        let client = self.client().await?;
        let rows = client
            .query(&prepare(&client, &sql).await?, &[])
            .await
            .map_err(|e| pg_error("list_endpoints", e))?;
        rows.iter()
            .map(|row| {
                let config: String = get(row, 1)?;
                let id: String = get(row, 0)?;
                codec::endpoint_from_json(&config, &id, get(row, 2)?, self.keys.as_deref())
            })
            .collect()
    }

    async fn do_endpoint_state(&self, endpoint: &str) -> Result<Vec<StateRecord>> {
        let sql = self.sql("do_endpoint_state", || {
            format!(
                "SELECT name, version, value FROM {} WHERE endpoint = $1 ORDER BY name",
                self.names.state
            )
        });
        let client = self.client().await?;
        let rows = client
            .query(&prepare(&client, &sql).await?, &[&endpoint])
            .await
            .map_err(|e| pg_error("endpoint_state", e))?;
        rows.iter()
            .map(|row| {
                let version: i64 = get(row, 1)?;
                Ok(StateRecord {
                    name: get(row, 0)?,
                    version: u64::try_from(version).unwrap_or(0),
                    value: get(row, 2)?,
                })
            })
            .collect()
    }

    async fn do_swap_endpoint_state(
        &self,
        endpoint: &str,
        name: &str,
        expected: u64,
        value: &str,
    ) -> Result<bool> {
        let client = self.client().await?;
        let n = if expected == 0 {
            let sql = self.sql("swap_state_insert", || {
                format!(
                    "INSERT INTO {} (endpoint, name, version, value) VALUES ($1, $2, 1, $3)
                     ON CONFLICT (endpoint, name) DO NOTHING",
                    self.names.state
                )
            });
            client
                .execute(&prepare(&client, &sql).await?, &[&endpoint, &name, &value])
                .await
        } else {
            let sql = self.sql("swap_state_update", || {
                format!(
                    "UPDATE {} SET version = version + 1, value = $4
                     WHERE endpoint = $1 AND name = $2 AND version = $3",
                    self.names.state
                )
            });
            client
                .execute(
                    &prepare(&client, &sql).await?,
                    &[&endpoint, &name, &to_i64(expected), &value],
                )
                .await
        }
        .map_err(|e| pg_error("swap_endpoint_state", e))?;
        Ok(n == 1)
    }

    async fn do_remove_endpoint(&self, id: &str) -> Result<bool> {
        let sql = self.sql("do_remove_endpoint", || {
            format!(
                "WITH s AS (DELETE FROM {} WHERE endpoint = $1)
                 DELETE FROM {} WHERE id = $1",
                self.names.state, self.names.endpoints
            )
        });
        let client = self.client().await?;
        let n = client
            .execute(&prepare(&client, &sql).await?, &[&id])
            .await
            .map_err(|e| pg_error("remove_endpoint", e))?;
        Ok(n > 0)
    }

    async fn do_append_audit(
        &self,
        endpoint: &str,
        actor: &str,
        change: &crate::audit::Change,
    ) -> Result<()> {
        let json = serde_json::to_string(change).map_err(|e| {
            QueueError::new(QueueErrorKind::Backend, "cannot encode audit entry").with_source(e)
        })?;
        let sql = self.sql("do_append_audit", || {
            format!(
                "INSERT INTO {} (endpoint, at_ms, actor, change) VALUES ($1, {NOW_MS}, $2, $3::text::jsonb)",
                self.names.audit
            )
        });
        let client = self.client().await?;
        client
            .execute(
                &prepare(&client, &sql).await?,
                &[&endpoint, &crate::audit::bounded_actor(actor), &json],
            )
            .await
            .map_err(|e| pg_error("append_audit", e))?;
        Ok(())
    }

    async fn do_endpoint_history(
        &self,
        endpoint: &str,
        limit: usize,
    ) -> Result<Vec<crate::audit::AuditEntry>> {
        let sql = self.sql("do_endpoint_history", || {
            format!(
                "SELECT at_ms, actor, change::text FROM
                   (SELECT seq, at_ms, actor, change FROM {} WHERE endpoint = $1
                     ORDER BY seq DESC LIMIT $2) AS last
                  ORDER BY seq",
                self.names.audit
            )
        });
        let client = self.client().await?;
        let rows = client
            .query(
                &prepare(&client, &sql).await?,
                &[&endpoint, &to_i64(limit as u64)],
            )
            .await
            .map_err(|e| pg_error("endpoint_history", e))?;
        rows.iter()
            .map(|row| {
                let change: String = get(row, 2)?;
                Ok(crate::audit::AuditEntry {
                    endpoint: endpoint.to_owned(),
                    at_ms: get(row, 0)?,
                    actor: get(row, 1)?,
                    change: serde_json::from_str(&change).map_err(|e| {
                        QueueError::new(QueueErrorKind::Backend, "stored audit entry: not valid")
                            .with_source(e)
                    })?,
                })
            })
            .collect()
    }

    async fn do_prune_audit(&self, retention: Duration, max: usize) -> Result<u64> {
        let sql = self.sql("do_prune_audit", || {
            format!(
                "DELETE FROM {a} WHERE seq IN
                   (SELECT seq FROM {a} WHERE at_ms <= {NOW_MS} - $1 ORDER BY seq LIMIT $2)",
                a = self.names.audit
            )
        });
        let client = self.client().await?;
        client
            .execute(
                &prepare(&client, &sql).await?,
                &[&millis(retention), &to_i64(max as u64)],
            )
            .await
            .map_err(|e| pg_error("prune_audit", e))
    }

    async fn do_set_endpoint_disabled(&self, id: &str, disabled: bool) -> Result<()> {
        let sql = self.sql("do_set_endpoint_disabled", || {
            format!(
                "UPDATE {} SET disabled = $2 WHERE id = $1",
                self.names.endpoints
            )
        });
        let client = self.client().await?;
        let n = client
            .execute(&prepare(&client, &sql).await?, &[&id, &disabled])
            .await
            .map_err(|e| pg_error("set_endpoint_disabled", e))?;
        if n == 0 {
            return Err(QueueError::new(
                QueueErrorKind::NotFound,
                format!("no endpoint {:?}", id.chars().take(64).collect::<String>()),
            ));
        }
        Ok(())
    }
}

/// Columns of a dead-letter row, in the order [`PostgresQueue::with_attempts`] reads.
const DEAD_COLUMNS: &str =
    "endpoint, message_id, event_type, payload, created_at_ms, reason, reason_detail, finished_at";

/// `sql` as a statement cached on this pooled connection (one round trip
/// less per call than an unnamed statement).
async fn prepare(
    client: &deadpool_postgres::Object,
    sql: &str,
) -> Result<tokio_postgres::Statement> {
    client
        .prepare_cached(sql)
        .await
        .map_err(|e| pg_error("prepare", e))
}

/// `(status, latency_ms)` as SQL parameters.
fn attempt_params(a: &Attempt) -> (Option<i32>, i64) {
    (a.status.map(i32::from), to_i64(a.latency_ms))
}

/// Column `i` of `row`, a typed error instead of a panic.
fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i).map_err(|e| {
        QueueError::new(QueueErrorKind::Backend, "postgres: unexpected column").with_source(e)
    })
}

impl Queue for PostgresQueue {
    fn put_endpoint<'a>(&'a self, endpoint: &'a Endpoint) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.do_put_endpoint(endpoint))
    }

    fn get_endpoint<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Endpoint>>> {
        Box::pin(self.do_get_endpoint(id))
    }

    fn list_endpoints(&self) -> BoxFuture<'_, Result<Vec<Endpoint>>> {
        Box::pin(self.do_list_endpoints())
    }

    fn remove_endpoint<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.do_remove_endpoint(id))
    }

    fn set_endpoint_disabled<'a>(
        &'a self,
        id: &'a str,
        disabled: bool,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.do_set_endpoint_disabled(id, disabled))
    }

    fn enqueue<'a>(
        &'a self,
        endpoint: &'a str,
        message: &'a Message,
    ) -> BoxFuture<'a, Result<Enqueued>> {
        Box::pin(self.do_enqueue(endpoint, message))
    }

    fn lease(&self, max: usize, lease: Duration) -> BoxFuture<'_, Result<Vec<Leased>>> {
        Box::pin(self.do_lease(max, lease))
    }

    fn lease_one<'a>(
        &'a self,
        key: &'a DeliveryKey,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<Leased>>> {
        Box::pin(self.do_lease_one(key, lease))
    }

    fn settle<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
        attempt: Option<Attempt>,
        transition: Transition,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.do_settle(key, token, attempt.as_ref(), &transition)
                .await
        })
    }

    fn release_held<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.do_release_held(endpoint))
    }

    fn state<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<Option<DeliveryState>>> {
        Box::pin(self.do_state(key))
    }

    fn add_dead_letter<'a>(&'a self, dead: &'a DeadLetter) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.do_add_dead_letter(dead))
    }

    fn list_dead<'a>(
        &'a self,
        filter: &'a DlqFilter,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>> {
        Box::pin(self.do_list_dead(filter, page))
    }

    fn get_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<Option<DeadLetter>>> {
        Box::pin(self.do_get_dead(key))
    }

    fn replay_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.do_replay_dead(key))
    }

    fn purge_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.do_purge_dead(key))
    }

    fn stats(&self) -> BoxFuture<'_, Result<QueueStats>> {
        Box::pin(self.do_stats())
    }

    fn prune(&self, dead_retention: Option<Duration>, max: usize) -> BoxFuture<'_, Result<u64>> {
        Box::pin(self.do_prune(dead_retention, max))
    }

    fn dead_letter_held<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.do_dead_letter_held(endpoint))
    }

    fn endpoint_state<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<Vec<StateRecord>>> {
        Box::pin(self.do_endpoint_state(endpoint))
    }

    fn swap_endpoint_state<'a>(
        &'a self,
        endpoint: &'a str,
        name: &'a str,
        expected: u64,
        value: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.do_swap_endpoint_state(endpoint, name, expected, value))
    }

    fn rescue(&self, max: usize, lease: Duration) -> BoxFuture<'_, Result<Vec<Leased>>> {
        Box::pin(self.do_rescue(max, lease))
    }

    fn append_audit<'a>(
        &'a self,
        endpoint: &'a str,
        actor: &'a str,
        change: &'a crate::audit::Change,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.do_append_audit(endpoint, actor, change))
    }

    fn endpoint_history<'a>(
        &'a self,
        endpoint: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<crate::audit::AuditEntry>>> {
        Box::pin(self.do_endpoint_history(endpoint, limit))
    }

    fn prune_audit(&self, retention: Duration, max: usize) -> BoxFuture<'_, Result<u64>> {
        Box::pin(self.do_prune_audit(retention, max))
    }
}

/// The maintenance leader lock of a [`PostgresQueue`]: a session advisory
/// lock (`pg_try_advisory_lock`) on a connection the holder keeps from the
/// pool; released when that connection closes (the process dies).
pub struct PostgresLeaderLock {
    pool: Pool,
    key: String,
    conn: Mutex<Option<deadpool_postgres::Object>>,
}

impl std::fmt::Debug for PostgresLeaderLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLeaderLock")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresLeaderLock {
    fn drop(&mut self) {
        // Close the holding connection instead of returning it to the pool
        // with the session lock still held.
        if let Some(conn) = self.conn.get_mut().take() {
            drop(deadpool_postgres::Object::take(conn));
        }
    }
}

impl crate::maintenance::LeaderLock for PostgresLeaderLock {
    fn try_lead(&self) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move {
            let mut held = self.conn.lock().await;
            if let Some(conn) = held.as_ref() {
                if conn.simple_query("SELECT 1").await.is_ok() {
                    return Ok(true);
                }
                // The connection broke: the lock went with it.
                *held = None;
            }
            let conn = self.pool.get().await.map_err(pool_error)?;
            let row = conn
                .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&self.key])
                .await
                .map_err(|e| pg_error("leader lock", e))?;
            let got: bool = get(&row, 0)?;
            if got {
                *held = Some(conn);
            }
            Ok(got)
        })
    }
}

impl PostgresQueue {
    /// A maintenance leader lock for the processes sharing this queue's
    /// tables. Its holder keeps one pooled connection.
    #[must_use]
    pub fn leader_lock(&self) -> PostgresLeaderLock {
        PostgresLeaderLock {
            pool: self.pool.clone(),
            key: format!(
                "hookgate-leader:{}.{}",
                self.names.schema, self.names.prefix
            ),
            conn: Mutex::new(None),
        }
    }
}

/// A leased job from a row of endpoint, message_id, event_type, payload,
/// created_at_ms, attempts, due, token.
fn leased_from_row(row: &Row) -> Result<Leased> {
    Ok(Leased {
        job: Job {
            key: DeliveryKey {
                endpoint: get(row, 0)?,
                message_id: get(row, 1)?,
            },
            message: Message {
                id: get(row, 1)?,
                event_type: get(row, 2)?,
                payload: get::<Vec<u8>>(row, 3)?.into(),
                created_at_ms: get(row, 4)?,
            },
            attempts: u32::try_from(get::<i32>(row, 5)?).unwrap_or(0),
            next_attempt_ms: get(row, 6)?,
        },
        token: LeaseToken(get(row, 7)?),
    })
}

/// A stored state name as a [`DeliveryState`].
fn parse_state(s: &str) -> Result<DeliveryState> {
    DeliveryState::parse(s).ok_or_else(|| {
        QueueError::new(
            QueueErrorKind::Backend,
            "postgres: unknown delivery state stored",
        )
    })
}

/// SQLSTATE 23505.
fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

#[cfg(test)]
mod tests {
    use super::valid_identifier;

    #[test]
    fn identifiers_are_validated() {
        assert!(valid_identifier("hookgate_test_01", false));
        assert!(valid_identifier("", true));
        assert!(!valid_identifier("", false));
        assert!(!valid_identifier("1abc", false));
        assert!(!valid_identifier("a\"; DROP TABLE x; --", false));
        assert!(!valid_identifier("Upper", false));
        assert!(!valid_identifier(&"a".repeat(41), false));
    }
}
