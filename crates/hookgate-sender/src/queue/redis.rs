//! Redis queue (feature `redis`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use hookgate_sender::{queue::RedisQueue, Message, Queue};
//!
//! let queue = RedisQueue::connect("redis://127.0.0.1:6379")
//!     .await?
//!     .with_prefix("webhooks:")?;
//! queue.enqueue("orders", &Message::new("order.paid", r#"{"id":1}"#)).await?;
//! # Ok(()) }
//! ```
//!
//! # Keys
//!
//! Every key starts with the prefix (default `hookgate:q:`). A delivery's
//! *member* is `endpoint \0 message_id`, so members sort like
//! [`DeliveryKey`]s (endpoint ids may not contain NUL).
//!
//! - `d:<member>` (hash): the delivery for its whole life: the message, its
//!   `state` (`scheduled`, `leased`, `held`, `delivered`, `dead`), attempt
//!   count, next attempt, lease token, and for a dead letter its reason and
//!   time. A delivered one expires after the retention window (`PEXPIRE`);
//! - `h:<member>` (list): the attempt history, one JSON object per attempt;
//! - `due` (sorted set): scheduled deliveries, scored by next attempt (Unix ms);
//! - `leased` (sorted set): leased deliveries, scored by lease expiry;
//! - `held` (sorted set, all scores 0, so a lexical range is one endpoint):
//!   held deliveries;
//! - `done` (sorted set): delivered keys by time, for the retention count;
//! - `dlq` and `dlq:e:<endpoint>` (sorted sets): dead letters scored by the
//!   time they died, for paging (all, and per endpoint);
//! - `ep:<id>` (hash): an endpoint's configuration, **secret strings
//!   included** (`config`) unless the queue has a keyring
//!   ([`with_keyring`](RedisQueue::with_keyring), [`crate::seal`]), and its
//!   `disabled` flag;
//! - `st:{<id>}` (hash): the endpoint's shared resilience state (circuit
//!   breakers per URL, rate limiter, failure streak): field `<name>` holds
//!   the value and `<name>#v` its version. Its one script (compare-and-set)
//!   declares the key in `KEYS`, and the `{<id>}` hash tag keeps one
//!   endpoint's state in one slot, so a Redis Cluster can shard it by
//!   endpoint.
//! - `audit:<id>` (list) and `audit-lists` (set): the endpoint's audit trail
//!   ([`crate::audit`]), items `<ms>|<json>` appended at the store's time.
//!
//! # Atomicity and time
//!
//! Every change is one Lua script. The lease script first moves expired
//! leases back to `due`, then takes due deliveries, in one step; all
//! "now"s come from the Redis server's `TIME`, so workers with skewed clocks
//! agree on lease expiry. Scripts touch keys derived from the prefix, so this
//! queue needs a single Redis server (or primary), not Redis Cluster.

use std::time::Duration;

use redis::{aio::ConnectionManager, aio::ConnectionManagerConfig, RedisError, Script};

use super::{
    delay_ms, Attempt, BoxFuture, DeadLetter, DeadReason, DeliveryKey, DeliveryState, DlqFilter,
    Enqueued, Job, LeaseToken, Leased, Page, Queue, QueueError, QueueErrorKind, QueueStats, Result,
    StateRecord, Transition, DEFAULT_DELIVERED_RETENTION,
};
use crate::{Endpoint, Message};

use super::codec;
use crate::seal::Keyring;
use std::sync::Arc;

/// How long to wait for the server when connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for one answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most expired leases moved back per lease call (the rest on later calls).
const MAX_EXPIRED_PER_LEASE: usize = 1000;
/// Dead letters fetched per round trip while paging.
const LIST_CHUNK: usize = 256;

/// Lua: the server's clock in Unix milliseconds, as `now` (integer string `nows`).
const NOW: &str = "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nows = string.format('%d', now)
";

/// Lua: record the attempt in ARGV[4] (if any) while the delivery exists,
/// then return 0 unless the delivery is leased with token ARGV[3]; on
/// success the lease is cleared and the body follows.
const FENCE: &str = "local P, m = ARGV[1], ARGV[2]
local d, h = P .. 'd:' .. m, P .. 'h:' .. m
if ARGV[4] ~= '' and redis.call('EXISTS', d) == 1 then
  redis.call('RPUSH', h, ARGV[4])
  local ttl = redis.call('PTTL', d)
  if ttl > 0 then redis.call('PEXPIRE', h, ttl) end
end
local f = redis.call('HMGET', d, 'state', 'token', 'endpoint')
if f[1] ~= 'leased' or f[2] ~= ARGV[3] then return 0 end
redis.call('ZREM', P .. 'leased', m)
redis.call('ZREM', P .. 'due', m)
redis.call('HDEL', d, 'token')
";

const ENQUEUE: &str = "local P, m = ARGV[1], ARGV[2]
local d = P .. 'd:' .. m
if redis.call('EXISTS', d) == 1 then
  return redis.call('HGET', d, 'state') or 'scheduled'
end
redis.call('DEL', P .. 'h:' .. m)
redis.call('HSET', d, 'endpoint', ARGV[3], 'id', ARGV[4], 'event_type', ARGV[5],
  'payload', ARGV[6], 'created_at_ms', ARGV[7], 'attempts', '0', 'next_attempt_ms', nows,
  'state', 'scheduled')
redis.call('ZADD', P .. 'due', nows, m)
return 'new'
";

const LEASE: &str = "local P = ARGV[1]
local due, leased = P .. 'due', P .. 'leased'
local expired = redis.call('ZRANGEBYSCORE', leased, '-inf', nows, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[5]))
for i = 1, #expired, 2 do
  redis.call('ZREM', leased, expired[i])
  redis.call('ZADD', due, expired[i + 1], expired[i])
end
local items = redis.call('ZRANGEBYSCORE', due, '-inf', nows, 'LIMIT', 0, tonumber(ARGV[2]))
local untils = string.format('%d', now + tonumber(ARGV[3]))
local out = {}
for i, m in ipairs(items) do
  local d = P .. 'd:' .. m
  redis.call('ZREM', due, m)
  local f = redis.call('HMGET', d, 'endpoint', 'id', 'event_type', 'payload', 'created_at_ms',
    'next_attempt_ms')
  if f[1] then
    local tok = ARGV[4] .. '.' .. i
    local n = redis.call('HINCRBY', d, 'attempts', 1)
    redis.call('ZADD', leased, untils, m)
    redis.call('HSET', d, 'token', tok, 'state', 'leased')
    out[#out + 1] = {f[1], f[2], f[3], f[4], f[5], tostring(n), f[6], tok}
  end
end
return out
";

const LEASE_ONE: &str = "local P, m = ARGV[1], ARGV[2]
local d = P .. 'd:' .. m
local f = redis.call('HMGET', d, 'state', 'endpoint', 'id', 'event_type', 'payload',
  'created_at_ms', 'next_attempt_ms')
if f[1] == 'leased' then
  local u = redis.call('ZSCORE', P .. 'leased', m)
  if u and tonumber(u) > now then return false end
elseif f[1] ~= 'scheduled' then
  return false
end
redis.call('ZREM', P .. 'due', m)
local n = redis.call('HINCRBY', d, 'attempts', 1)
redis.call('ZADD', P .. 'leased', string.format('%d', now + tonumber(ARGV[3])), m)
redis.call('HSET', d, 'token', ARGV[4], 'state', 'leased')
return {f[2], f[3], f[4], f[5], f[6], tostring(n), f[7], ARGV[4]}
";

const DELIVERED: &str = "redis.call('HSET', d, 'state', 'delivered', 'finished_ms', nows)
redis.call('ZADD', P .. 'done', nows, m)
redis.call('PEXPIRE', d, ARGV[5])
if redis.call('EXISTS', h) == 1 then redis.call('PEXPIRE', h, ARGV[5]) end
return 1
";

const RETRY: &str = "local at = string.format('%d', now + tonumber(ARGV[5]))
redis.call('HSET', d, 'state', 'scheduled', 'next_attempt_ms', at)
redis.call('ZADD', P .. 'due', at, m)
return 1
";

/// Defer and Interrupted (a defer by 0): scheduled again, attempt refunded.
const DEFER: &str = "local at = string.format('%d', now + tonumber(ARGV[5]))
redis.call('HSET', d, 'state', 'scheduled', 'next_attempt_ms', at)
if redis.call('HINCRBY', d, 'attempts', -1) < 0 then redis.call('HSET', d, 'attempts', '0') end
redis.call('ZADD', P .. 'due', at, m)
return 1
";

const HOLD: &str = "redis.call('HSET', d, 'state', 'held')
if redis.call('HINCRBY', d, 'attempts', -1) < 0 then redis.call('HSET', d, 'attempts', '0') end
redis.call('ZADD', P .. 'held', 0, m)
return 1
";

const DEAD: &str = "redis.call('HSET', d, 'state', 'dead', 'reason', ARGV[5], 'dead_at_ms', nows)
if ARGV[6] ~= '' then redis.call('HSET', d, 'reason_detail', string.sub(ARGV[6], 2))
else redis.call('HDEL', d, 'reason_detail') end
redis.call('ZADD', P .. 'dlq', nows, m)
redis.call('ZADD', P .. 'dlq:e:' .. f[3], nows, m)
return 1
";

const RELEASE_HELD: &str = "local P = ARGV[1]
local items = redis.call('ZRANGEBYLEX', P .. 'held', '[' .. ARGV[2] .. '\\0', '(' .. ARGV[2] .. '\\1')
for _, m in ipairs(items) do
  local d = P .. 'd:' .. m
  redis.call('ZREM', P .. 'held', m)
  if redis.call('HGET', d, 'state') == 'held' then
    redis.call('HSET', d, 'state', 'scheduled', 'next_attempt_ms', nows)
    redis.call('ZADD', P .. 'due', nows, m)
  end
end
return #items
";

/// Lua: dead-letter every held delivery of endpoint ARGV[2] (reason
/// `endpoint_disabled`), as the DEAD transition files one.
const DEAD_HELD: &str = "local P = ARGV[1]
local items = redis.call('ZRANGEBYLEX', P .. 'held', '[' .. ARGV[2] .. '\\0', '(' .. ARGV[2] .. '\\1')
local n = 0
for _, m in ipairs(items) do
  local d = P .. 'd:' .. m
  redis.call('ZREM', P .. 'held', m)
  if redis.call('HGET', d, 'state') == 'held' then
    redis.call('HSET', d, 'state', 'dead', 'reason', 'endpoint_disabled', 'dead_at_ms', nows)
    redis.call('HDEL', d, 'reason_detail')
    redis.call('ZADD', P .. 'dlq', nows, m)
    redis.call('ZADD', P .. 'dlq:e:' .. ARGV[2], nows, m)
    n = n + 1
  end
end
return n
";

const ADD_DEAD: &str = "local P, m = ARGV[1], ARGV[2]
local d, h = P .. 'd:' .. m, P .. 'h:' .. m
local st = redis.call('HGET', d, 'state')
if redis.call('EXISTS', d) == 1 and st ~= 'dead' then return 0 end
redis.call('DEL', d, h)
redis.call('HSET', d, 'endpoint', ARGV[3], 'id', ARGV[4], 'event_type', ARGV[5], 'payload', ARGV[6],
  'created_at_ms', ARGV[7], 'reason', ARGV[8], 'dead_at_ms', ARGV[9], 'state', 'dead',
  'attempts', tostring(#ARGV - 10))
if ARGV[10] ~= '' then redis.call('HSET', d, 'reason_detail', string.sub(ARGV[10], 2)) end
for i = 11, #ARGV do redis.call('RPUSH', h, ARGV[i]) end
redis.call('ZADD', P .. 'dlq', ARGV[9], m)
redis.call('ZADD', P .. 'dlq:e:' .. ARGV[3], ARGV[9], m)
return 1
";

const REPLAY: &str = "local P, m = ARGV[1], ARGV[2]
local d = P .. 'd:' .. m
local f = redis.call('HMGET', d, 'state', 'endpoint')
if f[1] ~= 'dead' then return 0 end
redis.call('HSET', d, 'state', 'scheduled', 'attempts', '0', 'next_attempt_ms', nows)
redis.call('HDEL', d, 'reason', 'reason_detail', 'dead_at_ms')
redis.call('ZREM', P .. 'dlq', m)
redis.call('ZREM', P .. 'dlq:e:' .. f[2], m)
redis.call('ZADD', P .. 'due', nows, m)
return 1
";

const PURGE: &str = "local P, m = ARGV[1], ARGV[2]
local d = P .. 'd:' .. m
local f = redis.call('HMGET', d, 'state', 'endpoint')
if f[1] ~= 'dead' then return 0 end
redis.call('DEL', d, P .. 'h:' .. m)
redis.call('ZREM', P .. 'dlq', m)
redis.call('ZREM', P .. 'dlq:e:' .. f[2], m)
return 1
";

const SET_DISABLED: &str = "local k = ARGV[1] .. 'ep:' .. ARGV[2]
if redis.call('EXISTS', k) == 0 then return 0 end
redis.call('HSET', k, 'disabled', ARGV[3])
return 1
";

const STATS: &str = "local P = ARGV[1]
local cut = string.format('%d', now - tonumber(ARGV[2]))
redis.call('ZREMRANGEBYSCORE', P .. 'done', '-inf', cut)
local live = redis.call('ZCOUNT', P .. 'leased', '(' .. nows, '+inf')
return {redis.call('ZCARD', P .. 'due') + redis.call('ZCARD', P .. 'leased') - live, live,
  redis.call('ZCARD', P .. 'held'), redis.call('ZCARD', P .. 'done'), redis.call('ZCARD', P .. 'dlq')}
";

/// ARGV: prefix, delivered retention ms, dead retention ms ('' for none), max.
const PRUNE: &str = "local P = ARGV[1]
local n = redis.call('ZREMRANGEBYSCORE', P .. 'done', '-inf', string.format('%d', now - tonumber(ARGV[2])))
if ARGV[3] ~= '' then
  local cut = string.format('%d', now - tonumber(ARGV[3]))
  local items = redis.call('ZRANGEBYSCORE', P .. 'dlq', '-inf', cut, 'LIMIT', 0, tonumber(ARGV[4]))
  for _, m in ipairs(items) do
    local d = P .. 'd:' .. m
    local ep = redis.call('HGET', d, 'endpoint')
    if redis.call('HGET', d, 'state') == 'dead' then
      redis.call('DEL', d, P .. 'h:' .. m)
      n = n + 1
    end
    redis.call('ZREM', P .. 'dlq', m)
    if ep then redis.call('ZREM', P .. 'dlq:e:' .. ep, m) end
  end
end
return n
";

/// ARGV: prefix, max, lease ms, token base.
const RESCUE: &str = "local P = ARGV[1]
local items = redis.call('ZRANGEBYSCORE', P .. 'leased', '-inf', nows, 'LIMIT', 0, tonumber(ARGV[2]))
local untils = string.format('%d', now + tonumber(ARGV[3]))
local out = {}
for i, m in ipairs(items) do
  local d = P .. 'd:' .. m
  local f = redis.call('HMGET', d, 'endpoint', 'id', 'event_type', 'payload', 'created_at_ms',
    'attempts', 'next_attempt_ms', 'state')
  if f[1] and f[8] == 'leased' then
    local tok = ARGV[4] .. '.' .. i
    redis.call('ZADD', P .. 'leased', untils, m)
    redis.call('HSET', d, 'token', tok)
    out[#out + 1] = {f[1], f[2], f[3], f[4], f[5], f[6], f[7], tok}
  else
    redis.call('ZREM', P .. 'leased', m)
  end
end
return out
";

/// The queue's Lua scripts, loaded once per process.
struct Scripts {
    enqueue: Script,
    lease: Script,
    lease_one: Script,
    delivered: Script,
    retry: Script,
    defer: Script,
    hold: Script,
    dead: Script,
    release_held: Script,
    add_dead: Script,
    replay: Script,
    purge: Script,
    set_disabled: Script,
    stats: Script,
    prune: Script,
    rescue: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let with_now = |body: &str| Script::new(&format!("{NOW}{body}"));
        let fenced = |body: &str| Script::new(&format!("{NOW}{FENCE}{body}"));
        Scripts {
            enqueue: with_now(ENQUEUE),
            lease: with_now(LEASE),
            lease_one: with_now(LEASE_ONE),
            delivered: fenced(DELIVERED),
            retry: fenced(RETRY),
            defer: fenced(DEFER),
            hold: fenced(HOLD),
            dead: fenced(DEAD),
            release_held: with_now(RELEASE_HELD),
            add_dead: Script::new(ADD_DEAD),
            replay: with_now(REPLAY),
            purge: Script::new(PURGE),
            set_disabled: Script::new(SET_DISABLED),
            stats: with_now(STATS),
            prune: with_now(PRUNE),
            rescue: with_now(RESCUE),
        }
    })
}

/// Lua: KEYS[1] the endpoint's state hash; ARGV[1] the record name,
/// ARGV[2] the expected version (0: none yet), ARGV[3] the new value.
/// Compare-and-set: 1 if stored (version bumped), 0 if another writer won.
const SWAP_STATE: &str = "local vf = ARGV[1] .. '#v'
local v = tonumber(redis.call('HGET', KEYS[1], vf) or '0')
if v ~= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3], vf, string.format('%d', v + 1))
return 1
";

/// A [`Queue`] in Redis, shareable by many workers on many machines. See the
/// [module docs](self) for the keys and scripts.
#[derive(Clone)]
pub struct RedisQueue {
    conn: ConnectionManager,
    prefix: String,
    /// How long delivered keys are kept, milliseconds.
    retention_ms: i64,
    /// Seals endpoint credentials at rest ([`crate::seal`]).
    keys: Option<Arc<Keyring>>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Classify a Redis error: connection trouble is `Unavailable`.
fn redis_error(context: &str, e: RedisError) -> QueueError {
    let kind = if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_connection_dropped()
    {
        QueueErrorKind::Unavailable
    } else {
        QueueErrorKind::Backend
    };
    QueueError::new(kind, format!("redis: {context}")).with_source(e)
}

fn corrupt(what: &str) -> QueueError {
    QueueError::new(
        QueueErrorKind::Backend,
        format!("redis: stored {what} is malformed"),
    )
}

/// The member naming a delivery: `endpoint \0 message_id`.
fn member(endpoint: &str, message_id: &str) -> Result<Vec<u8>> {
    if endpoint.contains('\0') {
        return Err(QueueError::new(
            QueueErrorKind::Config,
            "redis: endpoint id contains NUL",
        ));
    }
    let mut m = Vec::with_capacity(endpoint.len() + 1 + message_id.len());
    m.extend_from_slice(endpoint.as_bytes());
    m.push(0);
    m.extend_from_slice(message_id.as_bytes());
    Ok(m)
}

fn key_member(key: &DeliveryKey) -> Result<Vec<u8>> {
    member(&key.endpoint, &key.message_id)
}

/// The key a member names.
fn parse_member(m: &[u8]) -> Result<DeliveryKey> {
    let split = m
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| corrupt("member"))?;
    Ok(DeliveryKey {
        endpoint: utf8(&m[..split], "member")?,
        message_id: utf8(&m[split + 1..], "member")?,
    })
}

fn utf8(bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| corrupt(what))
}

fn number<T: std::str::FromStr>(bytes: &[u8], what: &str) -> Result<T> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt(what))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Fields of a delivery hash read for a dead letter, in the order [`dead_from_fields`] reads.
const DEAD_FIELDS: [&str; 9] = [
    "endpoint",
    "id",
    "event_type",
    "payload",
    "created_at_ms",
    "reason",
    "dead_at_ms",
    "state",
    "reason_detail",
];

fn dead_from_fields(
    key: DeliveryKey,
    mut fields: Vec<Option<Vec<u8>>>,
    history: &[Vec<u8>],
) -> Result<Option<DeadLetter>> {
    if fields.len() != DEAD_FIELDS.len() {
        return Err(corrupt("dead letter"));
    }
    let detail = fields.pop().flatten();
    if fields[7].as_deref() != Some(b"dead".as_slice()) {
        return Ok(None);
    }
    let f: Vec<Vec<u8>> = fields
        .into_iter()
        .map(|v| v.ok_or_else(|| corrupt("dead letter")))
        .collect::<Result<_>>()?;
    let detail = detail.map(|d| utf8(&d, "reason")).transpose()?;
    Ok(Some(DeadLetter {
        message: Message {
            id: key.message_id.clone(),
            event_type: utf8(&f[2], "event type")?,
            payload: f[3].clone().into(),
            created_at_ms: number(&f[4], "created_at_ms")?,
        },
        key,
        attempts: history
            .iter()
            .map(|a| codec::attempt_from_json(a))
            .collect::<Result<_>>()?,
        reason: DeadReason::from_parts(&utf8(&f[5], "reason")?, detail.as_deref()),
        dead_at_ms: number(&f[6], "dead_at_ms")?,
    }))
}

/// A leased job from the lease scripts' fields: endpoint, id, event type,
/// payload, created_at_ms, attempts, next_attempt_ms, token.
fn leased_from_fields(f: Vec<Vec<u8>>) -> Result<Leased> {
    let [endpoint, id, event_type, payload, created, attempts, next, tok]: [Vec<u8>; 8] =
        f.try_into().map_err(|_| corrupt("delivery"))?;
    let id = utf8(&id, "message id")?;
    Ok(Leased {
        job: Job {
            key: DeliveryKey {
                endpoint: utf8(&endpoint, "endpoint")?,
                message_id: id.clone(),
            },
            message: Message {
                id,
                event_type: utf8(&event_type, "event type")?,
                payload: payload.into(),
                created_at_ms: number(&created, "created_at_ms")?,
            },
            attempts: number(&attempts, "attempts")?,
            next_attempt_ms: number(&next, "next_attempt_ms")?,
        },
        token: LeaseToken(utf8(&tok, "token")?),
    })
}

/// `detail` as a script argument: empty for none, else `=` and the text.
fn detail_arg(detail: Option<&str>) -> String {
    detail.map_or_else(String::new, |d| format!("={d}"))
}

impl RedisQueue {
    /// Connect to `url` (`redis://host:port/db`), with key prefix `hookgate:q:`.
    /// The connection reconnects by itself after a failure.
    ///
    /// # Errors
    /// `Config` for a malformed URL; `Unavailable` when the server cannot be
    /// reached (bounded by a 5 s connect timeout and two quick retries).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with_ca(url, None).await
    }

    /// [`connect`](Self::connect); a `rediss://` server's certificate is
    /// checked against the CA certificates in the PEM file `ca` when given
    /// (else the system's roots). `rediss://..#insecure` is refused.
    ///
    /// # Errors
    /// As [`connect`](Self::connect); `Config` also for an unreadable CA file.
    pub async fn connect_with_ca(url: &str, ca: Option<&std::path::Path>) -> Result<Self> {
        let client = hookgate_backend::redis::client(url, ca).map_err(|e| {
            QueueError::new(
                QueueErrorKind::Config,
                "redis: malformed connection URL or TLS setting",
            )
            .with_source(e)
        })?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_factor(50)
            .set_max_delay(500)
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT * 3,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| QueueError::new(QueueErrorKind::Unavailable, "redis: connect timed out"))?
        .map_err(|e| redis_error("connect", e))?;
        Ok(Self {
            conn,
            prefix: "hookgate:q:".to_owned(),
            retention_ms: delay_ms(DEFAULT_DELIVERED_RETENTION),
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

    /// Start every key with `prefix` instead of `hookgate:q:` (tenants,
    /// tests). End it with a separator such as `:`.
    ///
    /// # Errors
    /// `Config` unless `prefix` is 1–128 bytes without control characters
    /// or spaces.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self> {
        if prefix.is_empty()
            || prefix.len() > 128
            || prefix.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(QueueError::new(
                QueueErrorKind::Config,
                "redis: key prefix must be 1-128 bytes without spaces or control characters",
            ));
        }
        prefix.clone_into(&mut self.prefix);
        Ok(self)
    }

    /// Keep delivered keys this long (default
    /// [`DEFAULT_DELIVERED_RETENTION`]; Redis expires them): enqueueing one
    /// again within it is a no-op, after it a new delivery.
    #[must_use]
    pub fn with_delivered_retention(mut self, retention: Duration) -> Self {
        self.retention_ms = delay_ms(retention).max(1);
        self
    }

    /// The key prefix in use.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Delete every key under this queue's prefix (SCAN + UNLINK). For tests
    /// and tear-down; never run it on a prefix another queue uses.
    ///
    /// # Errors
    /// `Unavailable` or `Backend` from Redis.
    pub async fn delete_all(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", glob_escape(&self.prefix));
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error("delete_all", e))?;
            if !keys.is_empty() {
                redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| redis_error("delete_all", e))?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// The endpoint's shared-state hash, `<prefix>st:{<id>}`.
    fn state_key(&self, endpoint: &str) -> Vec<u8> {
        self.key(format!("st:{{{endpoint}}}").as_bytes())
    }

    fn key(&self, suffix: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.as_bytes().to_vec();
        k.extend_from_slice(suffix);
        k
    }

    async fn do_enqueue(&self, endpoint: &str, message: &Message) -> Result<Enqueued> {
        let m = member(endpoint, &message.id)?;
        let mut conn = self.conn.clone();
        let answer: String = scripts()
            .enqueue
            .arg(&self.prefix)
            .arg(m)
            .arg(endpoint)
            .arg(&message.id)
            .arg(&message.event_type)
            .arg(message.payload.as_ref())
            .arg(message.created_at_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error("enqueue", e))?;
        if answer == "new" {
            return Ok(Enqueued::New);
        }
        DeliveryState::parse(&answer)
            .map(Enqueued::Exists)
            .ok_or_else(|| corrupt("delivery state"))
    }

    async fn do_lease(&self, max: usize, lease: Duration) -> Result<Vec<Leased>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let token = format!("{:032x}", rand::random::<u128>());
        let mut conn = self.conn.clone();
        let rows: Vec<Vec<Vec<u8>>> = scripts()
            .lease
            .arg(&self.prefix)
            .arg(max)
            .arg(millis(lease))
            .arg(&token)
            .arg(MAX_EXPIRED_PER_LEASE)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error("lease", e))?;
        rows.into_iter().map(leased_from_fields).collect()
    }

    async fn do_lease_one(&self, key: &DeliveryKey, lease: Duration) -> Result<Option<Leased>> {
        let m = key_member(key)?;
        let token = format!("{:032x}", rand::random::<u128>());
        let mut conn = self.conn.clone();
        let row: Option<Vec<Vec<u8>>> = scripts()
            .lease_one
            .arg(&self.prefix)
            .arg(m)
            .arg(millis(lease))
            .arg(&token)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error("lease_one", e))?;
        row.map(leased_from_fields).transpose()
    }

    /// Run a fenced script with `extra` arguments after prefix, member,
    /// token and attempt.
    async fn fenced(
        &self,
        what: &str,
        script: &Script,
        key: &DeliveryKey,
        token: &LeaseToken,
        attempt: Option<&Attempt>,
        extra: &[&[u8]],
    ) -> Result<bool> {
        let m = key_member(key)?;
        let json = attempt
            .map(codec::attempt_to_json)
            .transpose()?
            .unwrap_or_default();
        let mut invocation = script.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(m)
            .arg(&token.0)
            .arg(json.as_bytes());
        for a in extra {
            invocation.arg(*a);
        }
        let mut conn = self.conn.clone();
        let done: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error(what, e))?;
        Ok(done == 1)
    }

    async fn do_settle(
        &self,
        key: &DeliveryKey,
        token: &LeaseToken,
        attempt: Option<&Attempt>,
        transition: &Transition,
    ) -> Result<bool> {
        let s = scripts();
        let ms = |d: Duration| delay_ms(d).to_string();
        let (script, extra): (&Script, Vec<String>) = match transition {
            Transition::Delivered => (&s.delivered, vec![self.retention_ms.to_string()]),
            Transition::Retry { delay } => (&s.retry, vec![ms(*delay)]),
            Transition::Defer { delay, .. } => (&s.defer, vec![ms(*delay)]),
            Transition::Interrupted => (&s.defer, vec!["0".to_owned()]),
            Transition::Hold => (&s.hold, vec![]),
            Transition::Dead(reason) => (
                &s.dead,
                vec![reason.code().to_owned(), detail_arg(reason.detail())],
            ),
        };
        let extra: Vec<&[u8]> = extra.iter().map(String::as_bytes).collect();
        self.fenced("settle", script, key, token, attempt, &extra)
            .await
    }

    async fn do_add_dead_letter(&self, dead: &DeadLetter) -> Result<bool> {
        let k = &dead.key;
        let m = key_member(k)?;
        let mut invocation = scripts().add_dead.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(m)
            .arg(&k.endpoint)
            .arg(&k.message_id)
            .arg(&dead.message.event_type)
            .arg(dead.message.payload.as_ref())
            .arg(dead.message.created_at_ms)
            .arg(dead.reason.code())
            .arg(dead.dead_at_ms)
            .arg(detail_arg(dead.reason.detail()));
        for a in &dead.attempts {
            invocation.arg(codec::attempt_to_json(a)?);
        }
        let mut conn = self.conn.clone();
        let done: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error("add_dead_letter", e))?;
        Ok(done == 1)
    }

    /// Load the dead letters named by `members` (skipping vanished ones).
    async fn load_dead(&self, members: &[Vec<u8>]) -> Result<Vec<DeadLetter>> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for m in members {
            pipe.cmd("HMGET")
                .arg(self.key(&[b"d:", m.as_slice()].concat()))
                .arg(&DEAD_FIELDS[..]);
            pipe.cmd("LRANGE")
                .arg(self.key(&[b"h:", m.as_slice()].concat()))
                .arg(0)
                .arg(-1);
        }
        let mut conn = self.conn.clone();
        let values: Vec<redis::Value> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error("load dead letters", e))?;
        let mut out = Vec::with_capacity(members.len());
        let mut values = values.into_iter();
        for m in members {
            let (Some(fields), Some(history)) = (values.next(), values.next()) else {
                return Err(corrupt("pipeline reply"));
            };
            let fields: Vec<Option<Vec<u8>>> = redis::from_redis_value(&fields)
                .map_err(|e| redis_error("load dead letters", e))?;
            let history: Vec<Vec<u8>> = redis::from_redis_value(&history)
                .map_err(|e| redis_error("load dead letters", e))?;
            if let Some(dead) = dead_from_fields(parse_member(m)?, fields, &history)? {
                out.push(dead);
            }
        }
        Ok(out)
    }

    async fn do_list_dead(&self, filter: &DlqFilter, page: &Page) -> Result<Vec<DeadLetter>> {
        if page.limit == 0 {
            return Ok(Vec::new());
        }
        let zset = match &filter.endpoint {
            Some(endpoint) => {
                if endpoint.contains('\0') {
                    return Ok(Vec::new());
                }
                self.key(format!("dlq:e:{endpoint}").as_bytes())
            }
            None => self.key(b"dlq"),
        };
        let after = match &page.after {
            Some((at, key)) => Some((*at, key_member(key)?)),
            None => None,
        };
        let min = after
            .as_ref()
            .map(|(at, _)| *at)
            .into_iter()
            .chain(filter.since_ms)
            .max()
            .map_or_else(|| "-inf".to_owned(), |v| v.to_string());
        let max = filter
            .until_ms
            .map_or_else(|| "+inf".to_owned(), |v| format!("({v}"));
        let mut members: Vec<Vec<u8>> = Vec::new();
        let mut offset = 0usize;
        let mut conn = self.conn.clone();
        'chunks: loop {
            let chunk: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGEBYSCORE")
                .arg(&zset)
                .arg(&min)
                .arg(&max)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(offset)
                .arg(LIST_CHUNK)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error("list_dead", e))?;
            let n = chunk.len();
            for (m, score) in chunk {
                // Scores are whole milliseconds, exact in an f64.
                #[allow(clippy::cast_possible_truncation)]
                let at = score as i64;
                if let Some((after_at, after_m)) = &after {
                    if (at, &m) <= (*after_at, after_m) {
                        continue;
                    }
                }
                members.push(m);
                if members.len() == page.limit {
                    break 'chunks;
                }
            }
            if n < LIST_CHUNK {
                break;
            }
            offset += n;
        }
        self.load_dead(&members).await
    }

    async fn do_get_endpoint(&self, id: &str) -> Result<Option<Endpoint>> {
        let mut conn = self.conn.clone();
        let (config, disabled): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.key(format!("ep:{id}").as_bytes()))
            .arg("config")
            .arg("disabled")
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error("get_endpoint", e))?;
        let Some(config) = config else {
            return Ok(None);
        };
        let endpoint = codec::endpoint_from_json(
            &config,
            id,
            disabled.as_deref() == Some("1"),
            self.keys.as_deref(),
        )?;
        Ok(Some(endpoint))
    }
}

/// Lua: KEYS[1] the endpoint's audit list, KEYS[2] the set of audit lists,
/// ARGV[1] the entry's JSON (actor and change). Appends `<ms>|<json>` at
/// the store's time.
const APPEND_AUDIT: &str = "local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('RPUSH', KEYS[1], ms .. '|' .. ARGV[1])
redis.call('SADD', KEYS[2], KEYS[1])
return ms
";

/// An audit list item's JSON after the `<ms>|` prefix.
#[derive(serde::Serialize, serde::Deserialize)]
struct AuditItem {
    actor: String,
    change: crate::audit::Change,
}

/// Lua: KEYS[1] the lock, ARGV[1] token, ARGV[2] ttl ms. Renew if held by
/// the token, else take it if free.
const LEAD: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
";

/// The maintenance leader lock of a [`RedisQueue`]: `SET NX PX` on the key
/// `<prefix>leader`, renewed by each [`try_lead`](crate::maintenance::LeaderLock::try_lead)
/// of its holder; lost when the holder stops renewing for the TTL.
pub struct RedisLeaderLock {
    conn: ConnectionManager,
    key: String,
    token: String,
    ttl: Duration,
}

impl std::fmt::Debug for RedisLeaderLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLeaderLock")
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl crate::maintenance::LeaderLock for RedisLeaderLock {
    fn try_lead(&self) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move {
            static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
            let script = SCRIPT.get_or_init(|| Script::new(LEAD));
            let mut conn = self.conn.clone();
            let held: i64 = script
                .key(&self.key)
                .arg(&self.token)
                .arg(millis(self.ttl))
                .invoke_async(&mut conn)
                .await
                .map_err(|e| redis_error("leader lock", e))?;
            Ok(held == 1)
        })
    }
}

impl RedisQueue {
    async fn do_append_audit(
        &self,
        endpoint: &str,
        actor: &str,
        change: &crate::audit::Change,
    ) -> Result<()> {
        static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
        let script = SCRIPT.get_or_init(|| Script::new(APPEND_AUDIT));
        let json = serde_json::to_string(&AuditItem {
            actor: crate::audit::bounded_actor(actor).to_owned(),
            change: change.clone(),
        })
        .map_err(|e| {
            QueueError::new(QueueErrorKind::Backend, "cannot encode audit entry").with_source(e)
        })?;
        let mut conn = self.conn.clone();
        script
            .key(self.key(format!("audit:{endpoint}").as_bytes()))
            .key(self.key(b"audit-lists"))
            .arg(json)
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(|e| redis_error("append_audit", e))?;
        Ok(())
    }

    async fn do_endpoint_history(
        &self,
        endpoint: &str,
        limit: usize,
    ) -> Result<Vec<crate::audit::AuditEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let items: Vec<String> = redis::cmd("LRANGE")
            .arg(self.key(format!("audit:{endpoint}").as_bytes()))
            .arg(-i64::try_from(limit).unwrap_or(i64::MAX))
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error("endpoint_history", e))?;
        items
            .iter()
            .map(|item| {
                let bad =
                    || QueueError::new(QueueErrorKind::Backend, "stored audit entry: not valid");
                let (ms, json) = item.split_once('|').ok_or_else(bad)?;
                let parsed: AuditItem =
                    serde_json::from_str(json).map_err(|e| bad().with_source(e))?;
                Ok(crate::audit::AuditEntry {
                    endpoint: endpoint.to_owned(),
                    at_ms: ms.parse().map_err(|_| bad())?,
                    actor: parsed.actor,
                    change: parsed.change,
                })
            })
            .collect()
    }

    async fn do_prune_audit(&self, retention: Duration, max: usize) -> Result<u64> {
        let mut conn = self.conn.clone();
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error("prune_audit", e))?;
        let cutoff = (secs * 1000 + micros / 1000).saturating_sub(delay_ms(retention));
        let index = self.key(b"audit-lists");
        let lists: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(&index)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error("prune_audit", e))?;
        let mut pruned: u64 = 0;
        for list in lists {
            let budget = max.saturating_sub(usize::try_from(pruned).unwrap_or(usize::MAX));
            if budget == 0 {
                break;
            }
            // Items are appended in time order: the old ones are a prefix.
            let head: Vec<String> = redis::cmd("LRANGE")
                .arg(&list)
                .arg(0)
                .arg(i64::try_from(budget).unwrap_or(i64::MAX) - 1)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error("prune_audit", e))?;
            let old = head
                .iter()
                .take_while(|item| {
                    item.split_once('|')
                        .and_then(|(ms, _)| ms.parse::<i64>().ok())
                        .is_some_and(|ms| ms <= cutoff)
                })
                .count();
            if old > 0 {
                // Appends go to the tail, so trimming the head is safe.
                redis::cmd("LTRIM")
                    .arg(&list)
                    .arg(old)
                    .arg(-1)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| redis_error("prune_audit", e))?;
                pruned += old as u64;
            }
        }
        Ok(pruned)
    }

    /// A maintenance leader lock for the processes sharing this queue,
    /// held for `ttl` after each renewal (use more than the runner's
    /// interval plus jitter).
    #[must_use]
    pub fn leader_lock(&self, ttl: Duration) -> RedisLeaderLock {
        RedisLeaderLock {
            conn: self.conn.clone(),
            key: format!("{}leader", self.prefix),
            token: format!("{:032x}", rand::random::<u128>()),
            ttl,
        }
    }
}

/// Escape glob metacharacters for `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Queue for RedisQueue {
    fn put_endpoint<'a>(&'a self, endpoint: &'a Endpoint) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let config = codec::endpoint_to_json(endpoint, self.keys.as_deref())?;
            let key = self.key(format!("ep:{}", endpoint.id).as_bytes());
            let mut conn = self.conn.clone();
            // `disabled` is written only for a new endpoint (HSETNX).
            redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(&key)
                .arg("config")
                .arg(config)
                .ignore()
                .cmd("HSETNX")
                .arg(&key)
                .arg("disabled")
                .arg(if endpoint.disabled { "1" } else { "0" })
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| redis_error("put_endpoint", e))
        })
    }

    fn get_endpoint<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Endpoint>>> {
        Box::pin(self.do_get_endpoint(id))
    }

    fn list_endpoints(&self) -> BoxFuture<'_, Result<Vec<Endpoint>>> {
        Box::pin(async move {
            // Endpoint records are `<prefix>ep:<id>`; SCAN them (few, and
            // only operators list them).
            let mut conn = self.conn.clone();
            let marker = format!("{}ep:", self.prefix);
            let pattern = format!("{}*", glob_escape(&marker));
            let mut ids = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| redis_error("list_endpoints", e))?;
                ids.extend(
                    keys.iter()
                        .filter_map(|k| k.strip_prefix(&marker).map(str::to_owned)),
                );
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            ids.sort();
            ids.dedup();
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(endpoint) = self.do_get_endpoint(&id).await? {
                    out.push(endpoint);
                }
            }
            Ok(out)
        })
    }

    fn remove_endpoint<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let n: i64 = redis::cmd("DEL")
                .arg(self.key(format!("ep:{id}").as_bytes()))
                .arg(self.state_key(id))
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error("remove_endpoint", e))?;
            Ok(n > 0)
        })
    }

    fn set_endpoint_disabled<'a>(
        &'a self,
        id: &'a str,
        disabled: bool,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let done: i64 = scripts()
                .set_disabled
                .arg(&self.prefix)
                .arg(id)
                .arg(if disabled { "1" } else { "0" })
                .invoke_async(&mut conn)
                .await
                .map_err(|e| redis_error("set_endpoint_disabled", e))?;
            if done == 1 {
                Ok(())
            } else {
                Err(QueueError::new(
                    QueueErrorKind::NotFound,
                    format!("no endpoint {:?}", id.chars().take(64).collect::<String>()),
                ))
            }
        })
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
        Box::pin(async move {
            if endpoint.contains('\0') {
                return Ok(0);
            }
            let mut conn = self.conn.clone();
            let n: u64 = scripts()
                .release_held
                .arg(&self.prefix)
                .arg(endpoint)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| redis_error("release_held", e))?;
            Ok(n)
        })
    }

    fn dead_letter_held<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            if endpoint.contains('\0') {
                return Ok(0);
            }
            static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
            let mut conn = self.conn.clone();
            let n: u64 = SCRIPT
                .get_or_init(|| Script::new(&format!("{NOW}{DEAD_HELD}")))
                .arg(&self.prefix)
                .arg(endpoint)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| redis_error("dead_letter_held", e))?;
            Ok(n)
        })
    }

    fn state<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<Option<DeliveryState>>> {
        Box::pin(async move {
            let m = key_member(key)?;
            let mut conn = self.conn.clone();
            let state: Option<String> = redis::cmd("HGET")
                .arg(self.key(&[b"d:", m.as_slice()].concat()))
                .arg("state")
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error("state", e))?;
            state
                .map(|s| DeliveryState::parse(&s).ok_or_else(|| corrupt("delivery state")))
                .transpose()
        })
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
        Box::pin(async move {
            let m = key_member(key)?;
            Ok(self.load_dead(&[m]).await?.pop())
        })
    }

    fn replay_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let m = key_member(key)?;
            let mut conn = self.conn.clone();
            let done: i64 = scripts()
                .replay
                .arg(&self.prefix)
                .arg(m)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| redis_error("replay_dead", e))?;
            Ok(done == 1)
        })
    }

    fn purge_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let m = key_member(key)?;
            let mut conn = self.conn.clone();
            let done: i64 = scripts()
                .purge
                .arg(&self.prefix)
                .arg(m)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| redis_error("purge_dead", e))?;
            Ok(done == 1)
        })
    }

    fn prune(&self, dead_retention: Option<Duration>, max: usize) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let n: u64 = scripts()
                .prune
                .arg(&self.prefix)
                .arg(self.retention_ms)
                .arg(dead_retention.map_or_else(String::new, |d| delay_ms(d).to_string()))
                .arg(max)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| redis_error("prune", e))?;
            Ok(n)
        })
    }

    fn rescue(&self, max: usize, lease: Duration) -> BoxFuture<'_, Result<Vec<Leased>>> {
        Box::pin(async move {
            if max == 0 {
                return Ok(Vec::new());
            }
            let token = format!("{:032x}", rand::random::<u128>());
            let mut conn = self.conn.clone();
            let rows: Vec<Vec<Vec<u8>>> = scripts()
                .rescue
                .arg(&self.prefix)
                .arg(max)
                .arg(millis(lease))
                .arg(&token)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| redis_error("rescue", e))?;
            rows.into_iter().map(leased_from_fields).collect()
        })
    }

    fn endpoint_state<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<Vec<StateRecord>>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let all: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
                .arg(self.state_key(endpoint))
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error("endpoint_state", e))?;
            let mut out: Vec<StateRecord> = all
                .iter()
                .filter(|(name, _)| !name.ends_with("#v"))
                .map(|(name, value)| {
                    let version = all
                        .get(&format!("{name}#v"))
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| corrupt("endpoint state version"))?;
                    Ok(StateRecord {
                        name: name.clone(),
                        version,
                        value: value.clone(),
                    })
                })
                .collect::<Result<_>>()?;
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    fn swap_endpoint_state<'a>(
        &'a self,
        endpoint: &'a str,
        name: &'a str,
        expected: u64,
        value: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
            let mut conn = self.conn.clone();
            let done: i64 = SCRIPT
                .get_or_init(|| Script::new(SWAP_STATE))
                .key(self.state_key(endpoint))
                .arg(name)
                .arg(expected)
                .arg(value)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| redis_error("swap_endpoint_state", e))?;
            Ok(done == 1)
        })
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

    fn stats(&self) -> BoxFuture<'_, Result<QueueStats>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let (scheduled, leased, held, delivered, dead): (u64, u64, u64, u64, u64) = scripts()
                .stats
                .arg(&self.prefix)
                .arg(self.retention_ms)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| redis_error("stats", e))?;
            Ok(QueueStats {
                scheduled,
                leased,
                held,
                delivered,
                dead,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{member, parse_member, DeliveryKey};

    #[test]
    fn members_sort_like_keys_and_round_trip() {
        let keys = [("a", "z"), ("ab", "a"), ("a", "b"), ("b", ""), ("a-b", "x")];
        let mut by_key: Vec<DeliveryKey> = keys
            .iter()
            .map(|(e, m)| DeliveryKey {
                endpoint: (*e).to_owned(),
                message_id: (*m).to_owned(),
            })
            .collect();
        let mut by_member: Vec<Vec<u8>> = by_key
            .iter()
            .map(|k| member(&k.endpoint, &k.message_id).unwrap())
            .collect();
        by_key.sort();
        by_member.sort();
        let back: Vec<DeliveryKey> = by_member.iter().map(|m| parse_member(m).unwrap()).collect();
        assert_eq!(back, by_key);
        assert!(member("bad\0endpoint", "x").is_err());
        assert!(parse_member(b"no separator").is_err());
    }
}
