//! Redis store: one `EVALSHA` per operation, shared by every receiver replica.
//!
//! ```no_run
//! use hookgate_tower::store::RedisStore;
//! use std::time::Duration;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), hookgate_tower::store::StoreError> {
//! let store = RedisStore::connect("redis://127.0.0.1:6379")
//!     .await?
//!     .with_prefix("hookgate:")
//!     .with_timeout(Duration::from_secs(1));
//! # let _ = store;
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//! Each key holds one string value:
//!
//! - a claim: `c` + digest (32 bytes) + token, stored with `PX lease`;
//! - a done record: `d` + digest (32 bytes) + status (decimal), stored with
//!   `PX retention`.
//!
//! [`claim`](DedupStore::claim) is one Lua script: `SET key claim NX PX lease`,
//! and when the key exists, the stored value (and `PTTL` for a claim) in the
//! same call — so a new event, an in-flight duplicate and a done duplicate
//! each cost **one** round trip. [`complete`](DedupStore::complete) and
//! [`release`](DedupStore::release) are compare-and-set scripts that act only
//! when the stored value is a claim carrying the caller's token (one round
//! trip each). Redis expires leases and retention by itself; there is nothing
//! to sweep.
//!
//! Scripts run by `EVALSHA`; they are loaded when the store connects, and
//! reloaded once (`NOSCRIPT`) if the server lost them, e.g. after a restart.
//!
//! # Availability
//! The connection is a [`ConnectionManager`], which reconnects after Redis
//! restarts. Every call is bounded by a timeout (default
//! [`RedisStore::DEFAULT_TIMEOUT`]); refused connections, I/O errors,
//! timeouts and "loading"/"try again" replies map to
//! [`StoreErrorKind::Unavailable`], which the layer answers with 503.

use super::{
    BoxFuture, Claim, ClaimToken, DedupStore, Digest, DoneRecord, Result, StoreError,
    StoreErrorKind,
};
use redis::{aio::ConnectionManager, aio::ConnectionManagerConfig, Client, Script, Value};
use std::{fmt, sync::Arc, time::Duration};
use tokio::sync::OnceCell;

/// `SET NX PX`, else report what holds the key. KEYS[1] = key; ARGV[1] =
/// claim value, ARGV[2] = lease in ms. Returns `{0}` (acquired),
/// `{1, pttl, digest}` (in flight), `{2, status, digest}` (done) or `{3}`
/// (the key holds something this store did not write).
const CLAIM: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0}
end
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {0}
end
local kind = string.sub(v, 1, 1)
local digest = string.sub(v, 2, 33)
if kind == 'c' and #v > 33 then
  return {1, redis.call('PTTL', KEYS[1]), digest}
end
local status = tonumber(string.sub(v, 34))
if kind == 'd' and status then
  return {2, status, digest}
end
return {3}
";

/// Compare-and-set: if KEYS[1] holds a claim with token ARGV[1], replace it by
/// ARGV[2] (the done value) for ARGV[3] ms. Returns 1 if it did, else 0.
const COMPLETE: &str = r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 1) == 'c' and string.sub(v, 34) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Compare-and-delete: if KEYS[1] holds a claim with token ARGV[1], delete it.
const RELEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 1) == 'c' and string.sub(v, 34) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

struct Scripts {
    claim: Script,
    complete: Script,
    release: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            claim: Script::new(CLAIM),
            complete: Script::new(COMPLETE),
            release: Script::new(RELEASE),
        }
    }
}

/// A [`DedupStore`] on Redis (feature `redis`). Cheap to clone: clones share
/// one multiplexed connection.
#[derive(Clone)]
pub struct RedisStore {
    client: Option<Client>,
    conn: Arc<OnceCell<ConnectionManager>>,
    scripts: Arc<Scripts>,
    prefix: Arc<str>,
    timeout: Duration,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("connected", &self.conn.initialized())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Bound on each store call (and on connecting) unless changed with
    /// [`with_timeout`](Self::with_timeout).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// Connect to `url` (`redis://host:port/db`) and load the scripts.
    ///
    /// # Errors
    /// [`StoreErrorKind::Config`] for a malformed URL;
    /// [`StoreErrorKind::Unavailable`] when Redis cannot be reached within
    /// [`Self::DEFAULT_TIMEOUT`].
    pub async fn connect(url: &str) -> Result<Self> {
        let store = Self::lazy(url)?;
        let mut conn = store.conn().await?;
        store.load_scripts(&mut conn).await?;
        Ok(store)
    }

    /// A store for `url` that connects on first use, and retries connecting
    /// on each call until it succeeds (calls fail with
    /// [`StoreErrorKind::Unavailable`] meanwhile). Useful when a receiver may
    /// start before Redis does.
    ///
    /// # Errors
    /// [`StoreErrorKind::Config`] for a malformed URL.
    pub fn lazy(url: &str) -> Result<Self> {
        let client = Client::open(url).map_err(|e| {
            StoreError::new(StoreErrorKind::Config, "invalid Redis URL").with_source(e)
        })?;
        Ok(Self {
            client: Some(client),
            conn: Arc::new(OnceCell::new()),
            scripts: Arc::new(Scripts::new()),
            prefix: Arc::from(""),
            timeout: Self::DEFAULT_TIMEOUT,
        })
    }

    /// A store on an existing connection manager.
    #[must_use]
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            client: None,
            conn: Arc::new(OnceCell::new_with(Some(conn))),
            scripts: Arc::new(Scripts::new()),
            prefix: Arc::from(""),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// Put `prefix` in front of every key this store writes (e.g.
    /// `"hookgate:"`), to share a Redis database with other data.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Arc::from(prefix.into());
        self
    }

    /// Bound each call (and each connection attempt) by `timeout`.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The key prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn conn(&self) -> Result<ConnectionManager> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let init = async move {
            let Some(client) = client else {
                return Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    "no Redis connection",
                ));
            };
            // No reconnect retries with back-off inside the manager: while
            // Redis is down each call tries once and fails fast with
            // Unavailable (the layer answers 503 and the sender retries);
            // the manager reconnects on the next call after an I/O error.
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout)
                .set_number_of_retries(0);
            bounded(timeout, client.get_connection_manager_with_config(config)).await
        };
        self.conn.get_or_try_init(|| init).await.cloned()
    }

    async fn load_scripts(&self, conn: &mut ConnectionManager) -> Result<()> {
        for script in [
            &self.scripts.claim,
            &self.scripts.complete,
            &self.scripts.release,
        ] {
            bounded(self.timeout, script.prepare_invoke().load_async(conn)).await?;
        }
        Ok(())
    }

    fn key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + key.len());
        k.push_str(&self.prefix);
        k.push_str(key);
        k
    }

    async fn claim_impl(&self, key: &str, digest: &Digest, lease: Duration) -> Result<Claim> {
        let token = ClaimToken::generate();
        let mut value = Vec::with_capacity(1 + 32 + token.as_str().len());
        value.push(b'c');
        value.extend_from_slice(digest);
        value.extend_from_slice(token.as_str().as_bytes());
        let mut conn = self.conn().await?;
        let reply: Vec<Value> = bounded(
            self.timeout,
            self.scripts
                .claim
                .key(self.key(key))
                .arg(value)
                .arg(millis(lease))
                .invoke_async(&mut conn),
        )
        .await?;
        parse_claim(&reply, token)
    }

    async fn complete_impl(
        &self,
        key: &str,
        token: &ClaimToken,
        record: DoneRecord,
        retention: Duration,
    ) -> Result<bool> {
        let mut value = Vec::with_capacity(1 + 32 + 3);
        value.push(b'd');
        value.extend_from_slice(&record.digest);
        value.extend_from_slice(record.status.to_string().as_bytes());
        let mut conn = self.conn().await?;
        let done: i64 = bounded(
            self.timeout,
            self.scripts
                .complete
                .key(self.key(key))
                .arg(token.as_str())
                .arg(value)
                .arg(millis(retention))
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(done == 1)
    }

    async fn release_impl(&self, key: &str, token: &ClaimToken) -> Result<bool> {
        let mut conn = self.conn().await?;
        let done: i64 = bounded(
            self.timeout,
            self.scripts
                .release
                .key(self.key(key))
                .arg(token.as_str())
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(done == 1)
    }
}

/// Longest lease or retention passed to Redis (ten years), well inside what
/// `PX` accepts.
const MAX_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// Redis rejects `PX 0` and huge values; a lease or retention is clamped to
/// 1 ms ..= ten years.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_MS)
}

fn bad_reply(what: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Backend,
        format!("unexpected reply from the Redis claim script: {what}"),
    )
}

fn parse_claim(reply: &[Value], token: ClaimToken) -> Result<Claim> {
    let int = |v: Option<&Value>| match v {
        Some(Value::Int(i)) => Ok(*i),
        _ => Err(bad_reply("expected an integer")),
    };
    let digest = |v: Option<&Value>| match v {
        Some(Value::BulkString(b)) => {
            Digest::try_from(b.as_slice()).map_err(|_| bad_reply("digest is not 32 bytes"))
        }
        _ => Err(bad_reply("expected a digest")),
    };
    match int(reply.first())? {
        0 => Ok(Claim::Acquired(token)),
        1 => {
            // PTTL: -1 (no expiry) cannot happen for our keys; treat as 0.
            let ms = u64::try_from(int(reply.get(1))?).unwrap_or(0);
            Ok(Claim::InFlight {
                remaining: Duration::from_millis(ms),
                digest: digest(reply.get(2))?,
            })
        }
        2 => {
            let status =
                u16::try_from(int(reply.get(1))?).map_err(|_| bad_reply("status out of range"))?;
            Ok(Claim::Done(DoneRecord {
                status,
                digest: digest(reply.get(2))?,
            }))
        }
        3 => Err(StoreError::new(
            StoreErrorKind::Backend,
            "the Redis key holds a value this store did not write (key prefix shared?)",
        )),
        _ => Err(bad_reply("unknown outcome")),
    }
}

/// Run `fut` within `timeout`, mapping Redis errors to store errors.
async fn bounded<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(map_err(e)),
        Err(elapsed) => Err(StoreError::new(
            StoreErrorKind::Unavailable,
            format!("Redis did not answer within {timeout:?}"),
        )
        .with_source(elapsed)),
    }
}

fn map_err(e: redis::RedisError) -> StoreError {
    use redis::ErrorKind as K;
    let unavailable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            K::BusyLoadingError | K::TryAgain | K::ClusterDown | K::MasterDown | K::ReadOnly
        );
    if unavailable {
        StoreError::new(StoreErrorKind::Unavailable, "Redis is unreachable").with_source(e)
    } else {
        StoreError::new(StoreErrorKind::Backend, "Redis returned an error").with_source(e)
    }
}

impl DedupStore for RedisStore {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_replies_parse_or_fail_typed() {
        let t = ClaimToken::generate();
        assert_eq!(
            parse_claim(&[Value::Int(0)], t.clone()).unwrap(),
            Claim::Acquired(t.clone())
        );
        let d = Value::BulkString(vec![7; 32]);
        assert_eq!(
            parse_claim(&[Value::Int(1), Value::Int(1500), d.clone()], t.clone()).unwrap(),
            Claim::InFlight {
                remaining: Duration::from_millis(1500),
                digest: [7; 32]
            }
        );
        assert_eq!(
            parse_claim(&[Value::Int(2), Value::Int(204), d], t.clone()).unwrap(),
            Claim::Done(DoneRecord {
                status: 204,
                digest: [7; 32]
            })
        );
        for bad in [
            vec![],
            vec![Value::Int(9)],
            vec![Value::Int(1), Value::Int(5)],
            vec![
                Value::Int(2),
                Value::Int(70_000),
                Value::BulkString(vec![0; 32]),
            ],
            vec![
                Value::Int(2),
                Value::Int(200),
                Value::BulkString(vec![0; 31]),
            ],
        ] {
            let err = parse_claim(&bad, t.clone()).unwrap_err();
            assert_eq!(err.kind(), StoreErrorKind::Backend, "{bad:?}");
        }
    }

    #[test]
    fn bad_url_is_a_config_error() {
        let err = RedisStore::lazy("not a url").unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Config);
    }

    #[test]
    fn zero_durations_round_up() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_millis(250)), 250);
        assert_eq!(millis(Duration::MAX), MAX_MS);
    }
}
