//! Encryption at rest (issue 17, item 1) against real Postgres and Redis:
//! after storing an endpoint with a signing secret and an `Authorization`
//! header, neither value appears in any Postgres row or Redis value (all of
//! them scanned), and a delivery from the stored record still verifies.
//! Keys rotate (A → B, rekey, drop A) and a ciphertext copied to another
//! endpoint's record fails to open, naming its key id.
#![cfg(all(feature = "postgres", feature = "redis"))]

mod sender_support;
mod support;

use std::{future::Future, pin::Pin, sync::Arc};

use hookgate_core::{Scheme, Verifier};
use hookgate_sender::{
    delivery::DeliveryClient,
    outcome::{Class, Classifier},
    queue::{PostgresQueue, QueueErrorKind, RedisQueue},
    seal::{self, Keyring},
    Endpoint, Message, Queue,
};
use sender_support::{loopback, Receiver, Reply};

const SECRET: &str = "whsec_c2VjcmV0LWF0LXJlc3QtUzNDUkVULXZhbHVl";
/// What the secret decodes to is never stored either (base64 of it is the secret).
const BEARER: &str = "Bearer hdr-S3CRET-at-rest";
const KEY_A: &str = "a:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "b:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

type Fut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Raw access to a store, past the queue.
trait Raw: Send + Sync {
    /// Every value stored under the queue's namespace, as text.
    fn dump(&self) -> Fut<'_, String>;
    /// Copy endpoint `from`'s stored configuration into endpoint `to`'s record.
    fn copy_config<'a>(&'a self, from: &'a str, to: &'a str) -> Fut<'a, ()>;
}

fn keys(spec: &str) -> Keyring {
    Keyring::parse(spec).unwrap()
}

fn endpoint(id: &str, receiver: &Receiver) -> Endpoint {
    Endpoint::new(id, receiver.url(), Scheme::StandardWebhooks, SECRET)
        .unwrap()
        .with_header("Authorization", BEARER)
        .unwrap()
        .allowing_http(true)
}

/// Deliver one message to the endpoint as stored in `queue`; the receiver
/// verifies it with the secret and sees the header.
async fn delivers_and_verifies(queue: &dyn Queue, id: &str, receiver: &Receiver) {
    let stored = queue.get_endpoint(id).await.unwrap().expect("stored");
    assert_eq!(stored.secrets, [SECRET]);
    let client = DeliveryClient::new(loopback().allow_plain_http(), Classifier::default());
    let before = receiver.count();
    let msg = Message::new("t", r#"{"n":1}"#);
    let result = client.attempt(&stored, &msg).await;
    assert_eq!(result.class, Class::Delivered, "{:?}", result.reason);
    let received = receiver.received();
    assert_eq!(received.len(), before + 1);
    let last = received.last().unwrap();
    assert_eq!(last.headers["authorization"], BEARER);
    Verifier::from_secret_strings(Scheme::StandardWebhooks, [SECRET])
        .unwrap()
        .verify(&last.headers, &last.body)
        .expect("the receiver verifies");
}

fn assert_no_credential(dump: &str) {
    assert!(dump.contains("\"kid\""), "nothing sealed in:\n{dump}");
    for needle in [SECRET, &SECRET[6..], BEARER, "hdr-S3CRET"] {
        assert!(!dump.contains(needle), "{needle} stored in clear:\n{dump}");
    }
}

/// The whole story on one store. `open(spec)` gives a handle on the same
/// namespace with the keys in `spec` (or none).
async fn scenario<Q: Queue>(open: impl Fn(Option<&str>) -> Q, raw: &dyn Raw) {
    let receiver = Receiver::start(std::iter::repeat_n(Reply::status(204), 8)).await;

    // 1. Written under key A: nothing in clear anywhere, delivery verifies.
    let under_a = open(Some(KEY_A));
    under_a
        .put_endpoint(&endpoint("ep1", &receiver))
        .await
        .unwrap();
    under_a
        .put_endpoint(&endpoint("ep2", &receiver))
        .await
        .unwrap();
    under_a
        .enqueue("ep1", &Message::new("t", "{}"))
        .await
        .unwrap();
    assert_no_credential(&raw.dump().await);
    delivers_and_verifies(&under_a, "ep1", &receiver).await;

    // 2. Without any key: an error naming the key id, never an empty secret.
    let err = open(None).get_endpoint("ep1").await.unwrap_err();
    assert_eq!(err.kind(), QueueErrorKind::Encryption);
    assert!(err.to_string().contains("\"a\""), "{err}");

    // 3. Rotate: B first, A still listed; rekey; then drop A.
    let both = open(Some(&format!("{KEY_B},{KEY_A}")));
    delivers_and_verifies(&both, "ep1", &receiver).await; // reads under A
    let report = seal::rekey(&both).await.unwrap();
    assert_eq!(report.rewritten, 2);
    let dump = raw.dump().await;
    assert_no_credential(&dump);
    // Postgres prints jsonb with spaces and quotes doubled inside a row.
    let dump = dump.replace(' ', "").replace("\"\"", "\"");
    assert!(
        dump.contains("\"kid\":\"b\"") && !dump.contains("\"kid\":\"a\""),
        "{dump}"
    );
    let only_b = open(Some(KEY_B));
    delivers_and_verifies(&only_b, "ep1", &receiver).await;
    // A handle with only the old key names the key it lacks.
    let err = open(Some(KEY_A)).get_endpoint("ep1").await.unwrap_err();
    assert!(err.to_string().contains("\"b\""), "{err}");

    // 4. A ciphertext copied to another endpoint's record does not open.
    raw.copy_config("ep1", "ep2").await;
    let err = only_b.get_endpoint("ep2").await.unwrap_err();
    assert_eq!(err.kind(), QueueErrorKind::Encryption);
    assert!(err.to_string().contains("\"b\""), "{err}");
    assert!(only_b.get_endpoint("ep1").await.unwrap().is_some());

    // 5. A store written without a key still works; rekey seals it.
    let clear = open(None);
    clear
        .put_endpoint(&endpoint("ep3", &receiver))
        .await
        .unwrap();
    assert!(raw.dump().await.contains(BEARER));
    delivers_and_verifies(&only_b, "ep3", &receiver).await;
    clear.remove_endpoint("ep2").await.unwrap(); // the damaged copy
    seal::rekey(&only_b).await.unwrap();
    assert_no_credential(&raw.dump().await);
    delivers_and_verifies(&only_b, "ep3", &receiver).await;
}

struct PgRaw {
    schema: String,
}

async fn pg_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&support::postgres_url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

impl Raw for PgRaw {
    fn dump(&self) -> Fut<'_, String> {
        Box::pin(async move {
            let client = pg_client().await;
            let tables = client
                .query(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
                    &[&self.schema],
                )
                .await
                .unwrap();
            assert!(!tables.is_empty());
            let mut out = String::new();
            for t in tables {
                let table: String = t.get(0);
                // Every column of every row, as text.
                for row in client
                    .query(
                        &format!("SELECT r::text FROM \"{}\".\"{table}\" r", self.schema),
                        &[],
                    )
                    .await
                    .unwrap()
                {
                    out.push_str(&row.get::<_, String>(0));
                    out.push('\n');
                }
            }
            out
        })
    }

    fn copy_config<'a>(&'a self, from: &'a str, to: &'a str) -> Fut<'a, ()> {
        Box::pin(async move {
            let n = pg_client()
                .await
                .execute(
                    &format!(
                        "UPDATE \"{s}\".hookgate_endpoints SET config = \
                         (SELECT config FROM \"{s}\".hookgate_endpoints WHERE id = $1) WHERE id = $2",
                        s = self.schema
                    ),
                    &[&from, &to],
                )
                .await
                .unwrap();
            assert_eq!(n, 1);
        })
    }
}

struct RedisRaw {
    prefix: String,
}

async fn redis_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(support::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

impl Raw for RedisRaw {
    fn dump(&self) -> Fut<'_, String> {
        Box::pin(async move {
            let mut conn = redis_conn().await;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.prefix))
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(!keys.is_empty());
            let mut out = String::new();
            for key in keys {
                let kind: String = redis::cmd("TYPE")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let cmd = match kind.as_str() {
                    "string" => redis::cmd("GET").arg(&key).clone(),
                    "hash" => redis::cmd("HGETALL").arg(&key).clone(),
                    "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
                    "set" => redis::cmd("SMEMBERS").arg(&key).clone(),
                    "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).clone(),
                    "stream" => redis::cmd("XRANGE").arg(&key).arg("-").arg("+").clone(),
                    other => panic!("unexpected type {other} of {key}"),
                };
                let value: redis::Value = cmd.query_async(&mut conn).await.unwrap();
                out.push_str(&format!("{key} {value:?}\n"));
                // Binary-safe: bulk strings as text too.
                collect_text(&value, &mut out);
            }
            out
        })
    }

    fn copy_config<'a>(&'a self, from: &'a str, to: &'a str) -> Fut<'a, ()> {
        Box::pin(async move {
            let mut conn = redis_conn().await;
            let config: String = redis::cmd("HGET")
                .arg(format!("{}ep:{from}", self.prefix))
                .arg("config")
                .query_async(&mut conn)
                .await
                .unwrap();
            let _: () = redis::cmd("HSET")
                .arg(format!("{}ep:{to}", self.prefix))
                .arg("config")
                .arg(config)
                .query_async(&mut conn)
                .await
                .unwrap();
        })
    }
}

fn collect_text(value: &redis::Value, out: &mut String) {
    match value {
        redis::Value::BulkString(bytes) => {
            out.push_str(&String::from_utf8_lossy(bytes));
            out.push('\n');
        }
        redis::Value::Array(items) | redis::Value::Set(items) => {
            for item in items {
                collect_text(item, out);
            }
        }
        redis::Value::Map(pairs) => {
            for (k, v) in pairs {
                collect_text(k, out);
                collect_text(v, out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn postgres_stores_no_credential_in_clear_and_keys_rotate() {
    let Some(queue) = support::pg::fresh().await else {
        return;
    };
    let schema = queue.schema().to_owned();
    let raw = PgRaw {
        schema: schema.clone(),
    };
    let base = Arc::new(queue.clone());
    support::with_cleanup(
        scenario(
            |spec| {
                let q = (*base).clone();
                match spec {
                    Some(s) => q.with_keyring(keys(s)),
                    None => q,
                }
            },
            &raw,
        ),
        support::pg::drop_schema(&queue),
    )
    .await;
    let _: &PostgresQueue = &base;
}

#[tokio::test]
async fn redis_stores_no_credential_in_clear_and_keys_rotate() {
    let Some(queue) = support::redis::fresh().await else {
        return;
    };
    let raw = RedisRaw {
        prefix: queue.prefix().to_owned(),
    };
    let base: RedisQueue = queue.clone();
    support::with_cleanup(
        scenario(
            |spec| {
                let q = base.clone();
                match spec {
                    Some(s) => q.with_keyring(keys(s)),
                    None => q,
                }
            },
            &raw,
        ),
        support::redis::delete_keys(&queue),
    )
    .await;
}
