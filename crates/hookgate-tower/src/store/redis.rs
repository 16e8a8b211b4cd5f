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
//! - a done record: `d` + digest (32 bytes) + status (decimal) + `\n` +
//!   content type + `\n` + response body (at most 4 KiB), stored with
//!   `PX retention` (records written before bodies were kept end after the
//!   status and replay with an empty body).
//!
//! [`claim`](DedupStore::claim) is one Lua script: `SET key claim NX PX lease`,
//! and when the key exists, the stored value (and `PTTL` for a claim) in the
//! same call — so a new event, an in-flight duplicate and a done duplicate
//! each cost **one** round trip. [`complete`](DedupStore::complete),
//! [`release`](DedupStore::release) and [`renew`](DedupStore::renew) are
//! compare-and-set scripts that act only when the stored value is a claim
//! carrying the caller's token, or, for `complete`, when the key is free
//! (one round trip each). Redis expires leases and retention by itself;
//! there is nothing to sweep. Because Redis drops a claim as soon as its
//! lease ends, an expired claim cannot be renewed or released (it is
//! already gone), but it can still be completed.
//!
//! A key holding a value this store did not write (a shared prefix, another
//! application's data) is a [`StoreErrorKind::Config`] error, which the
//! layer answers with 500.
//!
//! Scripts run by `EVALSHA`; they are loaded when the store connects, and
//! reloaded once (`NOSCRIPT`) if the server lost them, e.g. after a restart.
//!
//! # Redis Cluster
//! [`connect`](RedisStore::connect) takes `redis+cluster://host:port,host:port`
//! (`rediss+cluster://` for TLS), or use
//! [`connect_cluster`](RedisStore::connect_cluster) with the seed nodes' URLs.
//! Every script touches exactly one key, declared in `KEYS`, so each call
//! goes to the master owning that key's slot; the client discovers the
//! cluster from the seeds and follows `MOVED`/`ASK` redirections. Scripts are
//! loaded on every master when the store connects, and again on the master
//! that answers `NOSCRIPT` (a failover, a new master). Nothing else changes:
//! the same code runs on one server or a cluster.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), hookgate_tower::store::StoreError> {
//! let store = hookgate_tower::store::RedisStore::connect(
//!     "redis+cluster://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000",
//! )
//! .await?;
//! # let _ = store;
//! # Ok(())
//! # }
//! ```
//!
//! # Availability
//! The connection is a [`ConnectionManager`] (a cluster connection for a
//! cluster), which reconnects after Redis
//! restarts. Every call is bounded by a timeout (default
//! [`RedisStore::DEFAULT_TIMEOUT`]); refused connections, I/O errors,
//! timeouts and "loading"/"try again" replies map to
//! [`StoreErrorKind::Unavailable`], which the layer answers with 503. A call
//! that times out also drops the connection (for stores built from a URL),
//! and the next call opens a fresh one: a connection that went silent
//! without closing (a lost NAT entry, a frozen network path) is not used
//! again, so service returns as soon as the network does rather than after
//! the kernel's TCP timeout.

use super::{
    BoxFuture, Claim, ClaimToken, DedupStore, Digest, DoneRecord, Result, StoreError,
    StoreErrorKind,
};
use bytes::Bytes;
use redis::{
    aio::ConnectionManager, aio::ConnectionManagerConfig, cluster::ClusterClient,
    cluster_async::ClusterConnection, Client, Script, Value,
};
use std::{fmt, sync::Arc, time::Duration};

/// `SET NX PX`, else report what holds the key. KEYS[1] = key; ARGV[1] =
/// claim value, ARGV[2] = lease in ms. Returns `{0}` (acquired),
/// `{1, pttl, digest}` (in flight), `{2, status, digest, content type +
/// "\n" + body}` (done) or `{3}`
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
local rest = string.sub(v, 34)
local nl = string.find(rest, '\n', 1, true)
local status = tonumber(nl and string.sub(rest, 1, nl - 1) or rest)
if kind == 'd' and status and #v >= 33 then
  return {2, status, digest, nl and string.sub(rest, nl + 1) or ''}
end
return {3}
";

/// Compare-and-set: if KEYS[1] holds a claim with token ARGV[1], or nothing
/// (free), set it to ARGV[2] (the done value) for ARGV[3] ms. Returns 1 if it
/// did, else 0.
const COMPLETE: &str = r"
local v = redis.call('GET', KEYS[1])
if v and not (string.sub(v, 1, 1) == 'c' and string.sub(v, 34) == ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// Compare-and-extend: if KEYS[1] holds a claim with token ARGV[1], make its
/// lease end ARGV[2] ms from now. Returns 1 if it did, else 0.
const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 1) == 'c' and string.sub(v, 34) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
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
    renew: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            claim: Script::new(CLAIM),
            complete: Script::new(COMPLETE),
            release: Script::new(RELEASE),
            renew: Script::new(RENEW),
        }
    }
}

/// Where connections come from: one server, or a cluster's seed nodes.
#[derive(Clone)]
enum Source {
    Single(Client),
    Cluster(ClusterClient),
}

/// A connection to one server or to a cluster.
// Cloned once per call: boxing the manager would add an allocation per call.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The current connection and a counter of how many were opened, so a call
/// that timed out drops only the connection it used.
#[derive(Default)]
struct Slot {
    current: std::sync::Mutex<Option<(u64, Conn)>>,
    /// Serializes opening a connection.
    connecting: tokio::sync::Mutex<u64>,
}

impl Slot {
    fn get(&self) -> Option<(u64, Conn)> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, generation: u64, conn: Conn) {
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((generation, conn));
    }

    /// Forget connection `generation` if it is still the current one.
    fn drop_if(&self, generation: u64) -> bool {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
            return true;
        }
        false
    }
}

/// A [`DedupStore`] on Redis (feature `redis`). Cheap to clone: clones share
/// one multiplexed connection.
#[derive(Clone)]
pub struct RedisStore {
    client: Option<Source>,
    conn: Arc<Slot>,
    scripts: Arc<Scripts>,
    prefix: Arc<str>,
    timeout: Duration,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("cluster", &matches!(self.client, Some(Source::Cluster(_))))
            .field("timeout", &self.timeout)
            .field("connected", &self.conn.get().is_some())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Bound on each store call (and on connecting) unless changed with
    /// [`with_timeout`](Self::with_timeout).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// Connect to `url` (`redis://host:port/db`, or a cluster:
    /// `redis+cluster://host:port,host:port`) and load the scripts.
    ///
    /// # Errors
    /// [`StoreErrorKind::Config`] for a malformed URL;
    /// [`StoreErrorKind::Unavailable`] when Redis cannot be reached within
    /// [`Self::DEFAULT_TIMEOUT`].
    pub async fn connect(url: &str) -> Result<Self> {
        let store = Self::lazy(url)?;
        let (_, mut conn) = store.conn().await?;
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
        Self::lazy_with_ca(url, None)
    }

    /// [`connect`](Self::connect) to a `rediss://` URL whose certificate is
    /// checked against the CA certificates in the PEM file `ca` (instead of
    /// the system's roots).
    ///
    /// # Errors
    /// As [`connect`](Self::connect); [`StoreErrorKind::Config`] also when
    /// `ca` cannot be read or the URL is not `rediss://`.
    pub async fn connect_with_ca(url: &str, ca: &std::path::Path) -> Result<Self> {
        let store = Self::lazy_with_ca(url, Some(ca))?;
        let (_, mut conn) = store.conn().await?;
        store.load_scripts(&mut conn).await?;
        Ok(store)
    }

    /// [`lazy`](Self::lazy), checking a `rediss://` server against the CA
    /// certificates in the PEM file `ca` when given (else the system's).
    /// `rediss://..#insecure` (no certificate check) is refused.
    ///
    /// # Errors
    /// [`StoreErrorKind::Config`] for a malformed URL or an unreadable CA file.
    pub fn lazy_with_ca(url: &str, ca: Option<&std::path::Path>) -> Result<Self> {
        let config = |e| {
            StoreError::new(StoreErrorKind::Config, "invalid Redis URL or TLS setting")
                .with_source(e)
        };
        let source = match hookgate_backend::redis::cluster_nodes(url) {
            Some(nodes) => Source::Cluster(
                hookgate_backend::redis::cluster_client(&nodes, ca, Self::DEFAULT_TIMEOUT)
                    .map_err(config)?,
            ),
            None => Source::Single(hookgate_backend::redis::client(url, ca).map_err(config)?),
        };
        Ok(Self {
            client: Some(source),
            conn: Arc::new(Slot::default()),
            scripts: Arc::new(Scripts::new()),
            prefix: Arc::from(""),
            timeout: Self::DEFAULT_TIMEOUT,
        })
    }

    /// [`connect`](Self::connect) to a Redis Cluster through its seed nodes
    /// (`redis://host:port` or `rediss://host:port` URLs; one is enough, the
    /// rest is discovered).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_cluster(nodes: &[String]) -> Result<Self> {
        let client = hookgate_backend::redis::cluster_client(nodes, None, Self::DEFAULT_TIMEOUT)
            .map_err(|e| {
                StoreError::new(StoreErrorKind::Config, "invalid Redis Cluster URL").with_source(e)
            })?;
        let store = Self {
            client: Some(Source::Cluster(client)),
            conn: Arc::new(Slot::default()),
            scripts: Arc::new(Scripts::new()),
            prefix: Arc::from(""),
            timeout: Self::DEFAULT_TIMEOUT,
        };
        let (_, mut conn) = store.conn().await?;
        store.load_scripts(&mut conn).await?;
        Ok(store)
    }

    /// A store on an existing connection manager. Such a store cannot open
    /// a fresh connection after a call times out (it has no URL); prefer
    /// [`connect`](Self::connect) or [`lazy`](Self::lazy).
    #[must_use]
    pub fn new(conn: ConnectionManager) -> Self {
        let slot = Slot::default();
        slot.set(0, Conn::Single(conn));
        Self {
            client: None,
            conn: Arc::new(slot),
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

    /// The current connection (and its generation), opening one if there is
    /// none.
    async fn conn(&self) -> Result<(u64, Conn)> {
        if let Some(current) = self.conn.get() {
            return Ok(current);
        }
        let Some(client) = self.client.clone() else {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "no Redis connection",
            ));
        };
        // Callers queue here while one opens the connection; bound the wait
        // so a burst of requests against a dead server each fail within the
        // timeout rather than one connect attempt after another.
        let Ok(mut opened) = tokio::time::timeout(self.timeout, self.conn.connecting.lock()).await
        else {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                format!("could not connect to Redis within {:?}", self.timeout),
            ));
        };
        if let Some(current) = self.conn.get() {
            return Ok(current);
        }
        // No reconnect retries with back-off inside the manager: while
        // Redis is down each call tries once and fails fast with
        // Unavailable (the layer answers 503 and the sender retries);
        // the manager reconnects on the next call after an I/O error.
        let conn = match client {
            Source::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(self.timeout)
                    .set_response_timeout(self.timeout)
                    .set_number_of_retries(0);
                Conn::Single(
                    bounded(
                        self.timeout,
                        client.get_connection_manager_with_config(config),
                    )
                    .await?,
                )
            }
            Source::Cluster(client) => {
                Conn::Cluster(bounded(self.timeout, client.get_async_connection()).await?)
            }
        };
        *opened += 1;
        self.conn.set(*opened, conn.clone());
        Ok((*opened, conn))
    }

    /// Run one script call on the current connection; if it times out,
    /// drop that connection so the next call opens a fresh one.
    async fn call<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        let (generation, mut conn) = self.conn().await?;
        match tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_err(e)),
            Err(elapsed) => {
                if self.client.is_some() && self.conn.drop_if(generation) {
                    tracing::warn!(
                        timeout = ?self.timeout,
                        "Redis did not answer in time; dropping the connection, the next call opens a new one"
                    );
                }
                Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!("Redis did not answer within {:?}", self.timeout),
                )
                .with_source(elapsed))
            }
        }
    }

    async fn load_scripts(&self, conn: &mut Conn) -> Result<()> {
        for script in [
            &self.scripts.claim,
            &self.scripts.complete,
            &self.scripts.release,
            &self.scripts.renew,
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
        let mut invocation = self.scripts.claim.key(self.key(key));
        invocation.arg(value).arg(millis(lease));
        let reply: Vec<Value> = self.call(&invocation).await?;
        parse_claim(&reply, token)
    }

    async fn complete_impl(
        &self,
        key: &str,
        token: &ClaimToken,
        record: DoneRecord,
        retention: Duration,
    ) -> Result<bool> {
        let mut invocation = self.scripts.complete.key(self.key(key));
        invocation
            .arg(token.as_str())
            .arg(done_value(&record))
            .arg(millis(retention));
        let done: i64 = self.call(&invocation).await?;
        Ok(done == 1)
    }

    async fn release_impl(&self, key: &str, token: &ClaimToken) -> Result<bool> {
        let mut invocation = self.scripts.release.key(self.key(key));
        invocation.arg(token.as_str());
        let done: i64 = self.call(&invocation).await?;
        Ok(done == 1)
    }

    async fn renew_impl(&self, key: &str, token: &ClaimToken, lease: Duration) -> Result<bool> {
        let mut invocation = self.scripts.renew.key(self.key(key));
        invocation.arg(token.as_str()).arg(millis(lease));
        let done: i64 = self.call(&invocation).await?;
        Ok(done == 1)
    }
}

/// `d` + digest + status + `\n` + content type + `\n` + body.
fn done_value(record: &DoneRecord) -> Vec<u8> {
    let content_type = record
        .content_type
        .as_deref()
        .filter(|c| !c.contains('\n'))
        .unwrap_or("");
    let mut value = Vec::with_capacity(1 + 32 + 5 + content_type.len() + record.body.len());
    value.push(b'd');
    value.extend_from_slice(&record.digest);
    value.extend_from_slice(record.status.to_string().as_bytes());
    value.push(b'\n');
    value.extend_from_slice(content_type.as_bytes());
    value.push(b'\n');
    value.extend_from_slice(&record.body);
    value
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
            let mut record = DoneRecord::new(status, digest(reply.get(2))?);
            // Content type and body; absent in records written before they
            // were kept.
            if let Some(Value::BulkString(rest)) = reply.get(3) {
                if let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                    let content_type = std::str::from_utf8(&rest[..nl])
                        .ok()
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned);
                    record =
                        record.with_body(content_type, Bytes::copy_from_slice(&rest[nl + 1..]));
                }
            }
            Ok(Claim::Done(record))
        }
        3 => Err(StoreError::new(
            StoreErrorKind::Config,
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
            parse_claim(&[Value::Int(2), Value::Int(204), d.clone()], t.clone()).unwrap(),
            Claim::Done(DoneRecord::new(204, [7; 32]))
        );
        let rest = Value::BulkString(b"application/json\n{\"ok\":1}".to_vec());
        assert_eq!(
            parse_claim(&[Value::Int(2), Value::Int(200), d, rest], t.clone()).unwrap(),
            Claim::Done(DoneRecord::new(200, [7; 32]).with_body(
                Some("application/json".into()),
                Bytes::from_static(b"{\"ok\":1}")
            ))
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
