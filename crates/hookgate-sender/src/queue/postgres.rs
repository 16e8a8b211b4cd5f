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
//!   secret strings**: grant access to this table as you would to the secrets.
//! - `deliveries (endpoint, message_id, event_type, payload, created_at_ms,
//!   attempts, next_attempt_at, lease_token, lease_until)`, primary key
//!   `(endpoint, message_id)`, indexed on `next_attempt_at`.
//! - `attempts (endpoint, message_id, n, at_ms, url, status, latency_ms,
//!   error)`: the history of a delivery, kept until it is delivered or its dead
//!   letter is purged.
//! - `dead (endpoint, message_id, event_type, payload, created_at_ms, reason,
//!   dead_at)`, indexed on `(dead_at, endpoint, message_id)` for paging.
//!
//! Times are Unix milliseconds (`bigint`). Lease expiry and "due now" always
//! use the database clock, so workers on machines with skewed clocks agree.
//! [`migrate`](PostgresQueue::migrate) creates what is missing and is
//! idempotent (an advisory lock serialises concurrent runs).
//!
//! # Leasing
//!
//! One statement takes a batch: the due rows are selected `FOR UPDATE SKIP
//! LOCKED`, so concurrent workers never wait on each other nor take the same
//! row, and each gets a fresh random token. A leased row's `next_attempt_at`
//! is set to its lease expiry, so a crashed worker's delivery simply becomes
//! due again. Every later change checks the token (fencing) and records the
//! attempt in the same statement.

use std::{sync::Arc, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Mutex;
use tokio_postgres::{GenericClient, NoTls, Row};

use super::{
    Attempt, BoxFuture, DeadLetter, DeliveryKey, DlqFilter, Job, LeaseToken, Leased, Page, Queue,
    QueueError, QueueErrorKind, QueueStats, Result,
};
use crate::{Endpoint, Message};

use super::codec;

/// The database clock, in Unix milliseconds (`now()`: the start of the
/// statement's transaction; stable, so indexes apply).
const NOW_MS: &str = "(extract(epoch from now()) * 1000)::bigint";

/// Default pool size.
const DEFAULT_POOL_SIZE: usize = 16;
/// How long to wait for a connection (new or from the pool).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`Queue`] in PostgreSQL, shareable by many workers on many machines, with
/// a transactional outbox ([`enqueue_in`](Self::enqueue_in)). See the
/// [module docs](self) for the tables and the leasing scheme.
#[derive(Clone)]
pub struct PostgresQueue {
    pool: Pool,
    names: Arc<Names>,
    migrated: Arc<Migrated>,
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

/// Qualified table names.
#[derive(Debug)]
struct Names {
    schema: String,
    prefix: String,
    endpoints: String,
    deliveries: String,
    attempts: String,
    dead: String,
}

impl Names {
    fn new(schema: &str, prefix: &str) -> Self {
        let t = |name: &str| format!("\"{schema}\".\"{prefix}{name}\"");
        Self {
            schema: schema.to_owned(),
            prefix: prefix.to_owned(),
            endpoints: t("endpoints"),
            deliveries: t("deliveries"),
            attempts: t("attempts"),
            dead: t("dead"),
        }
    }
}

/// `name` is a plain lower-case SQL identifier (with room for a table suffix).
fn valid_identifier(name: &str, allow_empty: bool) -> bool {
    if name.is_empty() {
        return allow_empty;
    }
    name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

fn invalid(message: impl Into<String>) -> QueueError {
    QueueError::new(QueueErrorKind::Config, message)
}

/// Classify a database error: connection trouble is `Unavailable`.
fn pg_error(context: &str, e: tokio_postgres::Error) -> QueueError {
    let unavailable = match e.as_db_error() {
        // Class 08: connection exception; 57P0x: server shutting down.
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || code.starts_with("57P0")
        }
        None => {
            e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
        }
    };
    let kind = if unavailable {
        QueueErrorKind::Unavailable
    } else {
        QueueErrorKind::Backend
    };
    QueueError::new(kind, format!("postgres: {context}")).with_source(e)
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
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| invalid("postgres: malformed connection URL").with_source(e))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT * 2))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| invalid("postgres: cannot build pool").with_source(e))?;
        // Open one connection now, so a wrong URL fails here.
        drop(pool.get().await.map_err(pool_error)?);
        Ok(Self {
            pool,
            names: Arc::new(Names::new("public", "hookgate_")),
            migrated: Arc::default(),
        })
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
        }
    }

    /// The schema in use.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.names.schema
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
                attempts integer NOT NULL DEFAULT 0,
                next_attempt_at bigint NOT NULL,
                lease_token text,
                lease_until bigint,
                PRIMARY KEY (endpoint, message_id)
            );
            CREATE INDEX IF NOT EXISTS "{p}deliveries_due" ON {deliveries} (next_attempt_at);
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
            CREATE TABLE IF NOT EXISTS {dead} (
                endpoint text COLLATE "C" NOT NULL,
                message_id text COLLATE "C" NOT NULL,
                event_type text NOT NULL,
                payload bytea NOT NULL,
                created_at_ms bigint NOT NULL,
                reason text NOT NULL,
                dead_at bigint NOT NULL,
                PRIMARY KEY (endpoint, message_id)
            );
            CREATE INDEX IF NOT EXISTS "{p}dead_paging" ON {dead} (dead_at, endpoint, message_id);
            CREATE INDEX IF NOT EXISTS "{p}dead_endpoint" ON {dead} (endpoint, dead_at, message_id);
            "#,
            endpoints = n.endpoints,
            deliveries = n.deliveries,
            attempts = n.attempts,
            dead = n.dead,
        );
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("migrate", e))?;
        tx.batch_execute(&ddl)
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
    /// commits or rolls back with the caller's data. Enqueueing a key that is
    /// already queued is a no-op. Due now (database clock, at insert).
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
    ) -> Result<()> {
        self.migrate().await?;
        client
            .execute(
                self.enqueue_sql().as_str(),
                &[
                    &endpoint,
                    &message.id,
                    &message.event_type,
                    &message.payload.as_ref(),
                    &message.created_at_ms,
                ],
            )
            .await
            .map_err(|e| pg_error("enqueue", e))?;
        Ok(())
    }

    fn enqueue_sql(&self) -> String {
        format!(
            "INSERT INTO {} (endpoint, message_id, event_type, payload, created_at_ms, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, {NOW_MS}) ON CONFLICT (endpoint, message_id) DO NOTHING",
            self.names.deliveries
        )
    }

    /// [`Queue::enqueue`]: on a pooled connection, with a cached statement.
    async fn do_enqueue(&self, endpoint: &str, message: &Message) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.enqueue_sql())
            .await
            .map_err(|e| pg_error("enqueue", e))?;
        client
            .execute(
                &stmt,
                &[
                    &endpoint,
                    &message.id,
                    &message.event_type,
                    &message.payload.as_ref(),
                    &message.created_at_ms,
                ],
            )
            .await
            .map_err(|e| pg_error("enqueue", e))?;
        Ok(())
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
                n.endpoints, n.deliveries, n.attempts, n.dead
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
        let d = &self.names.deliveries;
        let sql = format!(
            "UPDATE {d} AS q
                SET lease_token = $3 || '.' || s.rn,
                    lease_until = s.now + $2,
                    next_attempt_at = s.now + $2
               FROM (SELECT endpoint, message_id, next_attempt_at AS due, {NOW_MS} AS now,
                            row_number() OVER () AS rn
                       FROM (SELECT endpoint, message_id, next_attempt_at FROM {d}
                              WHERE next_attempt_at <= {NOW_MS}
                              ORDER BY next_attempt_at
                              LIMIT $1
                              FOR UPDATE SKIP LOCKED) AS due_rows) AS s
              WHERE q.endpoint = s.endpoint AND q.message_id = s.message_id
          RETURNING q.endpoint, q.message_id, q.event_type, q.payload, q.created_at_ms,
                    q.attempts, s.due, q.lease_token"
        );
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&sql)
            .await
            .map_err(|e| pg_error("lease", e))?;
        let rows = client
            .query(&stmt, &[&to_i64(max as u64), &millis(lease), &new_token()])
            .await
            .map_err(|e| pg_error("lease", e))?;
        rows.iter()
            .map(|row| {
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
            })
            .collect()
    }

    /// Run a fenced statement that yields one `count` column; `true` when the
    /// token held the lease.
    async fn fenced(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(sql)
            .await
            .map_err(|e| pg_error(what, e))?;
        let row = client
            .query_one(&stmt, params)
            .await
            .map_err(|e| pg_error(what, e))?;
        Ok(get::<i64>(&row, 0)? > 0)
    }

    /// SQL inserting the attempt in parameters `$4..$8` for the key in CTE `k`.
    fn insert_attempt_sql(&self) -> String {
        let a = &self.names.attempts;
        format!(
            "INSERT INTO {a} (endpoint, message_id, n, at_ms, url, status, latency_ms, error)
             SELECT k.endpoint, k.message_id,
                    (SELECT coalesce(max(n), 0) + 1 FROM {a}
                      WHERE endpoint = k.endpoint AND message_id = k.message_id),
                    $4, $5, $6, $7, $8
               FROM k"
        )
    }

    async fn do_retry_later(
        &self,
        key: &DeliveryKey,
        token: &LeaseToken,
        attempt: &Attempt,
        next_attempt_ms: i64,
    ) -> Result<bool> {
        let sql = format!(
            "WITH k AS (UPDATE {d} SET attempts = attempts + 1, next_attempt_at = $9,
                                   lease_token = NULL, lease_until = NULL
                         WHERE endpoint = $1 AND message_id = $2 AND lease_token = $3
                     RETURNING endpoint, message_id),
                  a AS ({insert})
             SELECT count(*) FROM k",
            d = self.names.deliveries,
            insert = self.insert_attempt_sql(),
        );
        let (status, latency) = attempt_params(attempt);
        self.fenced(
            "retry_later",
            &sql,
            &[
                &key.endpoint,
                &key.message_id,
                &token.0,
                &attempt.at_ms,
                &attempt.url,
                &status,
                &latency,
                &attempt.error,
                &next_attempt_ms,
            ],
        )
        .await
    }

    async fn do_delivered(&self, key: &DeliveryKey, token: &LeaseToken) -> Result<bool> {
        // The history of a delivered message is not kept (it would grow
        // without bound); the attempt is reported through tracing/metrics.
        let sql = format!(
            "WITH k AS (DELETE FROM {d}
                         WHERE endpoint = $1 AND message_id = $2 AND lease_token = $3
                     RETURNING endpoint, message_id),
                  h AS (DELETE FROM {a} USING k
                         WHERE {a}.endpoint = k.endpoint AND {a}.message_id = k.message_id)
             SELECT count(*) FROM k",
            d = self.names.deliveries,
            a = self.names.attempts,
        );
        self.fenced(
            "delivered",
            &sql,
            &[&key.endpoint, &key.message_id, &token.0],
        )
        .await
    }

    async fn do_dead_letter(
        &self,
        key: &DeliveryKey,
        token: &LeaseToken,
        attempt: Option<&Attempt>,
        reason: &str,
    ) -> Result<bool> {
        let sql = format!(
            "WITH k AS (DELETE FROM {d}
                         WHERE endpoint = $1 AND message_id = $2 AND lease_token = $3
                     RETURNING endpoint, message_id, event_type, payload, created_at_ms),
                  a AS ({insert} WHERE $9),
                  x AS (INSERT INTO {x} (endpoint, message_id, event_type, payload, created_at_ms, reason, dead_at)
                        SELECT endpoint, message_id, event_type, payload, created_at_ms, $10, {NOW_MS} FROM k
                        ON CONFLICT (endpoint, message_id) DO UPDATE
                           SET event_type = excluded.event_type, payload = excluded.payload,
                               created_at_ms = excluded.created_at_ms, reason = excluded.reason,
                               dead_at = excluded.dead_at)
             SELECT count(*) FROM k",
            d = self.names.deliveries,
            x = self.names.dead,
            insert = self.insert_attempt_sql(),
        );
        let empty = Attempt {
            at_ms: 0,
            url: String::new(),
            status: None,
            latency_ms: 0,
            error: None,
        };
        let a = attempt.unwrap_or(&empty);
        let (status, latency) = attempt_params(a);
        let reason = reason.to_owned();
        self.fenced(
            "dead_letter",
            &sql,
            &[
                &key.endpoint,
                &key.message_id,
                &token.0,
                &a.at_ms,
                &a.url,
                &status,
                &latency,
                &a.error,
                &attempt.is_some(),
                &reason,
            ],
        )
        .await
    }

    async fn do_release(&self, key: &DeliveryKey, token: &LeaseToken) -> Result<bool> {
        let sql = format!(
            "WITH k AS (UPDATE {d} SET next_attempt_at = {NOW_MS}, lease_token = NULL, lease_until = NULL
                         WHERE endpoint = $1 AND message_id = $2 AND lease_token = $3
                     RETURNING 1)
             SELECT count(*) FROM k",
            d = self.names.deliveries,
        );
        self.fenced("release", &sql, &[&key.endpoint, &key.message_id, &token.0])
            .await
    }

    async fn do_add_dead_letter(&self, dead: &DeadLetter) -> Result<()> {
        let n = &self.names;
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("add_dead_letter", e))?;
        let k = &dead.key;
        tx.execute(
            &format!(
                "INSERT INTO {} (endpoint, message_id, event_type, payload, created_at_ms, reason, dead_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (endpoint, message_id) DO UPDATE
                    SET event_type = excluded.event_type, payload = excluded.payload,
                        created_at_ms = excluded.created_at_ms, reason = excluded.reason,
                        dead_at = excluded.dead_at",
                n.dead
            ),
            &[
                &k.endpoint,
                &k.message_id,
                &dead.message.event_type,
                &dead.message.payload.as_ref(),
                &dead.message.created_at_ms,
                &dead.reason,
                &dead.dead_at_ms,
            ],
        )
        .await
        .map_err(|e| pg_error("add_dead_letter", e))?;
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
            .map_err(|e| pg_error("add_dead_letter", e))
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
                    reason: get(row, 5)?,
                    dead_at_ms: get(row, 6)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if dead.is_empty() {
            return Ok(dead);
        }
        let endpoints: Vec<&str> = dead.iter().map(|d| d.key.endpoint.as_str()).collect();
        let ids: Vec<&str> = dead.iter().map(|d| d.key.message_id.as_str()).collect();
        let sql = format!(
            "SELECT endpoint, message_id, at_ms, url, status, latency_ms, error FROM {}
              WHERE (endpoint, message_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
              ORDER BY endpoint, message_id, n",
            self.names.attempts
        );
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
        let sql = format!(
            "SELECT {DEAD_COLUMNS} FROM {x}
              WHERE ($1::text IS NULL OR endpoint = $1)
                AND ($2::bigint IS NULL OR dead_at >= $2)
                AND ($3::bigint IS NULL OR dead_at < $3)
                AND ($4::bigint IS NULL OR (dead_at, endpoint, message_id) > ($4, $5::text, $6::text))
              ORDER BY dead_at, endpoint, message_id
              LIMIT $7",
            x = self.names.dead
        );
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
        let sql = format!(
            "SELECT {DEAD_COLUMNS} FROM {} WHERE endpoint = $1 AND message_id = $2",
            self.names.dead
        );
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
        let sql = format!(
            "WITH x AS (DELETE FROM {x} WHERE endpoint = $1 AND message_id = $2
                     RETURNING endpoint, message_id, event_type, payload, created_at_ms),
                  q AS (INSERT INTO {d} (endpoint, message_id, event_type, payload, created_at_ms,
                                         attempts, next_attempt_at)
                        SELECT endpoint, message_id, event_type, payload, created_at_ms, 0, {NOW_MS} FROM x
                        ON CONFLICT (endpoint, message_id) DO NOTHING)
             SELECT count(*) FROM x",
            x = self.names.dead,
            d = self.names.deliveries,
        );
        let client = self.client().await?;
        let row = client
            .query_one(
                &prepare(&client, &sql).await?,
                &[&key.endpoint, &key.message_id],
            )
            .await
            .map_err(|e| pg_error("replay_dead", e))?;
        Ok(get::<i64>(&row, 0)? > 0)
    }

    async fn do_purge_dead(&self, key: &DeliveryKey) -> Result<bool> {
        let sql = format!(
            "WITH x AS (DELETE FROM {x} WHERE endpoint = $1 AND message_id = $2
                     RETURNING endpoint, message_id),
                  h AS (DELETE FROM {a} USING x
                         WHERE {a}.endpoint = x.endpoint AND {a}.message_id = x.message_id
                           AND NOT EXISTS (SELECT 1 FROM {d}
                                            WHERE endpoint = x.endpoint AND message_id = x.message_id))
             SELECT count(*) FROM x",
            x = self.names.dead,
            a = self.names.attempts,
            d = self.names.deliveries,
        );
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
        let sql = format!(
            "SELECT (SELECT count(*) FROM {d}),
                    (SELECT count(*) FROM {d} WHERE lease_until > {NOW_MS}),
                    (SELECT count(*) FROM {x})",
            d = self.names.deliveries,
            x = self.names.dead,
        );
        let client = self.client().await?;
        let row = client
            .query_one(&prepare(&client, &sql).await?, &[])
            .await
            .map_err(|e| pg_error("stats", e))?;
        let count = |i| get::<i64>(&row, i).map(|n| u64::try_from(n).unwrap_or(0));
        Ok(QueueStats {
            pending: count(0)?,
            leased: count(1)?,
            dead: count(2)?,
        })
    }

    async fn do_put_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        let config = codec::endpoint_to_json(endpoint)?;
        let sql = format!(
            "INSERT INTO {} (id, config, disabled) VALUES ($1, $2::text::jsonb, $3)
             ON CONFLICT (id) DO UPDATE SET config = excluded.config, disabled = excluded.disabled",
            self.names.endpoints
        );
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
        let sql = format!(
            "SELECT config::text, disabled FROM {} WHERE id = $1",
            self.names.endpoints
        );
        let client = self.client().await?;
        let row = client
            .query_opt(&prepare(&client, &sql).await?, &[&id])
            .await
            .map_err(|e| pg_error("get_endpoint", e))?;
        match row {
            None => Ok(None),
            Some(row) => {
                let config: String = get(&row, 0)?;
                let mut endpoint = codec::endpoint_from_json(&config, get(&row, 1)?)?;
                // The row's id is authoritative.
                endpoint.id = id.to_owned();
                Ok(Some(endpoint))
            }
        }
    }

    async fn do_set_endpoint_disabled(&self, id: &str, disabled: bool) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET disabled = $2 WHERE id = $1",
            self.names.endpoints
        );
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
    "endpoint, message_id, event_type, payload, created_at_ms, reason, dead_at";

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

    fn set_endpoint_disabled<'a>(
        &'a self,
        id: &'a str,
        disabled: bool,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.do_set_endpoint_disabled(id, disabled))
    }

    fn enqueue<'a>(&'a self, endpoint: &'a str, message: &'a Message) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.do_enqueue(endpoint, message))
    }

    fn lease(&self, max: usize, lease: Duration) -> BoxFuture<'_, Result<Vec<Leased>>> {
        Box::pin(self.do_lease(max, lease))
    }

    fn retry_later<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
        attempt: Attempt,
        next_attempt_ms: i64,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.do_retry_later(key, token, &attempt, next_attempt_ms)
                .await
        })
    }

    fn delivered<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
        _attempt: Attempt,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.do_delivered(key, token))
    }

    fn dead_letter<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
        attempt: Option<Attempt>,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.do_dead_letter(key, token, attempt.as_ref(), reason)
                .await
        })
    }

    fn release<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.do_release(key, token))
    }

    fn add_dead_letter<'a>(&'a self, dead: &'a DeadLetter) -> BoxFuture<'a, Result<()>> {
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
