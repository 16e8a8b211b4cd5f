//! No secret in any id, key, row, output or error (issue 8, item 7).
//!
//! `hookgate send` to a loopback URL carrying `user:password@` and
//! `?token=`, dead-lettered into a namespaced Redis or Postgres store: the
//! secret strings appear in no Redis key name or value and no Postgres row
//! outside the endpoint record, in no line the command prints (run with
//! `RUST_LOG=trace`), and not in `hookgate dlq list --json`. Store DSNs with
//! passwords, in every form, never appear in a CLI error.

mod send_support;

use std::process::{Command, Output, Stdio};

use send_support::{namespace, stderr, stdout, Receiver, SECRET};

const USER_SECRET: &str = "usr_S3CRET_u";
const PASSWORD_SECRET: &str = "pw_S3CRET_p";
const TOKEN_SECRET: &str = "tok_S3CRET_t";
const SECRETS: [&str; 3] = [USER_SECRET, PASSWORD_SECRET, TOKEN_SECRET];

/// Run `hookgate ARGS` with `RUST_LOG=trace`, off the async runtime.
async fn hookgate(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(&args)
            .env_remove("HOOKGATE_SECRET")
            .env_remove("HOOKGATE_STORE")
            .env_remove("HOOKGATE_NAMESPACE")
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .output()
            .expect("run hookgate")
    })
    .await
    .unwrap()
}

fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} leaked in {what}:\n{text}");
    }
}

/// Send to a URL with credentials; the receiver answers 500 then 400, so the
/// message is attempted twice and dead-lettered into `store`. Returns the
/// endpoint id `dlq list` shows.
async fn send_with_credentials(store: &str, ns: &str) -> String {
    let receiver = Receiver::start(&[500], 400).await;
    let url = format!(
        "http://{USER_SECRET}:{PASSWORD_SECRET}@{}/hook?token={TOKEN_SECRET}&x=1",
        receiver.addr
    );
    let out = hookgate(
        [
            "send",
            &url,
            "--secret",
            SECRET,
            "--data",
            r#"{"n":1}"#,
            "--id",
            "msg_secrets",
            "--max-attempts",
            "3",
            "--base-delay",
            "10ms",
            "--allow-private",
            "--allow-http",
            "--store",
            store,
            "--namespace",
            ns,
        ]
        .map(str::to_owned)
        .to_vec(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(receiver.count(), 2, "{}", stdout(&out));
    assert_clean("send stdout", &stdout(&out));
    assert_clean("send stderr", &stderr(&out));
    assert!(
        stderr(&out).contains("dead letter msg_secrets"),
        "{}",
        stderr(&out)
    );
    // The logs were on, and checked: the worker's spans name the endpoint.
    assert!(
        stderr(&out).contains("hookgate_sender.deliver"),
        "{}",
        stderr(&out)
    );

    let out = hookgate(
        ["dlq", "list", "--json", "--store", store, "--namespace", ns]
            .map(str::to_owned)
            .to_vec(),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = stdout(&out);
    assert_clean("dlq list --json", &listed);
    assert_clean("dlq list stderr", &stderr(&out));
    let want_id = format!("http://{}/hook", receiver.addr);
    assert!(listed.contains(&want_id), "{listed}");
    let out = hookgate(
        [
            "dlq",
            "show",
            "msg_secrets",
            "--json",
            "--store",
            store,
            "--namespace",
            ns,
        ]
        .map(str::to_owned)
        .to_vec(),
    )
    .await;
    assert_clean("dlq show --json", &stdout(&out));
    assert_clean("dlq show stderr", &stderr(&out));
    want_id
}

#[tokio::test]
async fn redis_keys_and_values_carry_no_url_secret() {
    let url = send_support::redis_url();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = match client.get_multiplexed_async_connection().await {
        Ok(c) => c,
        Err(e) => {
            send_support::skip_unreachable("Redis", &e);
            return;
        }
    };
    let ns = namespace();
    let result = tokio::spawn({
        let (url, ns, mut conn) = (url.clone(), ns.clone(), conn.clone());
        async move {
            send_with_credentials(&url, &ns).await;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{ns}:*"))
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(keys.len() > 2, "{keys:?}");
            let endpoint_record = format!("{ns}:q:ep:");
            for key in &keys {
                assert_clean("a Redis key", key);
                if key.starts_with(&endpoint_record) {
                    continue; // the one place the URL is kept
                }
                let kind: String = redis::cmd("TYPE")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let values: Vec<Vec<u8>> = match kind.as_str() {
                    "string" => vec![redis::cmd("GET")
                        .arg(key)
                        .query_async(&mut conn)
                        .await
                        .unwrap()],
                    "hash" => redis::cmd("HGETALL")
                        .arg(key)
                        .query_async(&mut conn)
                        .await
                        .unwrap(),
                    "zset" => redis::cmd("ZRANGE")
                        .arg(key)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut conn)
                        .await
                        .unwrap(),
                    "list" => redis::cmd("LRANGE")
                        .arg(key)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut conn)
                        .await
                        .unwrap(),
                    "set" => redis::cmd("SMEMBERS")
                        .arg(key)
                        .query_async(&mut conn)
                        .await
                        .unwrap(),
                    other => panic!("unexpected Redis type {other} for {key}"),
                };
                for v in values {
                    assert_clean(
                        &format!("Redis value of {key}"),
                        &String::from_utf8_lossy(&v),
                    );
                }
            }
        }
    })
    .await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{ns}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn postgres_rows_outside_the_endpoint_record_carry_no_url_secret() {
    let url = send_support::postgres_url();
    let (client, connection) = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) => {
            send_support::skip_unreachable("Postgres", &e);
            return;
        }
    };
    tokio::spawn(connection);
    let client = std::sync::Arc::new(client);
    let ns = namespace();
    let result = tokio::spawn({
        let (url, ns, client) = (url.clone(), ns.clone(), client.clone());
        async move {
            let endpoint_id = send_with_credentials(&url, &ns).await;
            let tables: Vec<String> = client
                .query(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
                    &[&ns],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert!(tables.len() >= 3, "{tables:?}");
            let mut rows = 0;
            for table in &tables {
                let sql = if table.ends_with("endpoints") {
                    // The endpoint record keeps the URL; its id must not.
                    format!("SELECT to_json(id)::text FROM \"{ns}\".\"{table}\"")
                } else {
                    format!("SELECT row_to_json(t)::text FROM \"{ns}\".\"{table}\" t")
                };
                for row in client.query(&sql, &[]).await.unwrap() {
                    let json: String = row.get(0);
                    assert_clean(&format!("a row of {table}"), &json);
                    rows += 1;
                }
            }
            // The endpoint, the dead letter and its two attempts at least.
            assert!(rows >= 4, "only {rows} rows in {tables:?}");
            let ids: Vec<String> = client
                .query(
                    &format!(
                        "SELECT id FROM \"{ns}\".\"{}\"",
                        tables.iter().find(|t| t.ends_with("endpoints")).unwrap()
                    ),
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(ids, [endpoint_id]);
        }
    })
    .await;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{ns}\" CASCADE"))
        .await
        .unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Every DSN form with a password: the CLI's error names the store without it.
#[tokio::test]
async fn store_passwords_never_appear_in_cli_errors() {
    // Port 1 on loopback: nothing listens, so opening the store fails.
    for (store, secret) in [
        ("postgres://app:pw_S3CRET_p@127.0.0.1:1/test", "pw_S3CRET_p"),
        ("postgres://app:p@ss@S3CRET@127.0.0.1:1/test", "ss@S3CRET"),
        (
            "postgresql://127.0.0.1:1/test?user=app&password=S3CRET_q",
            "S3CRET_q",
        ),
        (
            "host=127.0.0.1 port=1 user=app password=S3CRET_kv dbname=test",
            "S3CRET_kv",
        ),
        (
            "host=127.0.0.1 port=1 password='S3CRET quoted' dbname=test",
            "S3CRET quoted",
        ),
        ("redis://:S3CRET_r@127.0.0.1:1/0", "S3CRET_r"),
        ("redis://default:p@S3CRET_r2@127.0.0.1:1", "S3CRET_r2"),
    ] {
        let out = hookgate(
            ["dlq", "list", "--store", store]
                .map(str::to_owned)
                .to_vec(),
        )
        .await;
        let (o, e) = (stdout(&out), stderr(&out));
        assert_ne!(out.status.code(), Some(0), "{store}: {o}");
        assert!(!e.is_empty(), "{store}: no error printed");
        for text in [&o, &e] {
            assert!(!text.contains(secret), "{store}: {secret} in {text}");
            assert!(!text.contains("S3CRET"), "{store}: {text}");
        }
    }
}
