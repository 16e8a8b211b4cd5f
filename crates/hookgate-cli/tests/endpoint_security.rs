//! `hookgate endpoint` and issue 17 on the real stores: with
//! `HOOKGATE_ENCRYPTION_KEY` set, no secret, header value or URL token sits
//! in any Postgres row or Redis value; `http://` needs `--allow-http`;
//! keys rotate with `endpoint rekey`; a missing key is an error naming its
//! id; and `endpoint history` lists every change with the OS user as actor
//! and no secret.

mod cli_support;

use std::process::{Command, Output, Stdio};

use cli_support::stores;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW_SECRET: &str = "whsec_c2VjcmV0LWF0LXJlc3QtUzNDUkVULXZhbHVl";
const KEY_A: &str = "a:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "b:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const NEEDLES: [&str; 5] = [
    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "c2VjcmV0LWF0LXJlc3Q",
    "hdr_S3CRET",
    "tok_S3CRET",
    "whsec_",
];

fn hookgate(key: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    cmd.args(args)
        .env_remove("HOOKGATE_ENCRYPTION_KEY")
        .env_remove("HOOKGATE_ENCRYPTION_KEY_FILE")
        .env_remove("HOOKGATE_STORE")
        .env_remove("HOOKGATE_NAMESPACE")
        .env_remove("HOOKGATE_SECRET")
        .env("USER", "auditor")
        .stdin(Stdio::null());
    if let Some(key) = key {
        cmd.env("HOOKGATE_ENCRYPTION_KEY", key);
    }
    cmd.output().expect("hookgate runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every row of every table in schema `ns`, or every value under `ns:q:`.
async fn dump(store: &str, ns: &str) -> String {
    let mut out = String::new();
    if store.starts_with("postgres") {
        let (client, conn) = tokio_postgres::connect(store, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let tables = client
            .query(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
                &[&ns],
            )
            .await
            .unwrap();
        assert!(!tables.is_empty());
        for t in tables {
            let table: String = t.get(0);
            for row in client
                .query(&format!("SELECT r::text FROM \"{ns}\".\"{table}\" r"), &[])
                .await
                .unwrap()
            {
                out.push_str(&row.get::<_, String>(0));
                out.push('\n');
            }
        }
    } else {
        let client = redis::Client::open(store).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{ns}:q:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!keys.is_empty());
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let cmd = match kind.as_str() {
                "hash" => redis::cmd("HGETALL").arg(&key).clone(),
                "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
                "set" => redis::cmd("SMEMBERS").arg(&key).clone(),
                "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).clone(),
                "string" => redis::cmd("GET").arg(&key).clone(),
                other => panic!("unexpected type {other} of {key}"),
            };
            let value: redis::Value = cmd.query_async(&mut conn).await.unwrap();
            out.push_str(&format!("{key} {value:?}\n"));
        }
    }
    out
}

fn assert_clean(what: &str, s: &str) {
    for needle in NEEDLES {
        assert!(!s.contains(needle), "{needle} in {what}:\n{s}");
    }
}

async fn scenario(store: String, ns: String) {
    let (store, ns) = (store.as_str(), ns.as_str());
    let base = ["--store", store, "--namespace", ns];
    let run = |key: Option<&str>, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&base);
        hookgate(key, &all)
    };
    let url = "https://shop.example.com/hooks?token=tok_S3CRET";
    let add = [
        "endpoint",
        "add",
        "shop",
        "--url",
        url,
        "--scheme",
        "standard",
        "-H",
        "Authorization: Bearer hdr_S3CRET",
    ];

    // Plain http is refused with the reason, nothing stored.
    let out = run(
        Some(KEY_A),
        &[
            "endpoint",
            "add",
            "plain",
            "--url",
            "http://127.0.0.1:9/h",
            "--secret",
            SECRET,
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("plain http://"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("--allow-http"));

    // Added under key A: nothing in clear.
    let out = run(Some(KEY_A), &[&add[..], &["--secret", SECRET]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("UNENCRYPTED"),
        "{}",
        text(&out.stderr)
    );
    let stored = dump(store, ns).await;
    // The dump is readable text (the sealed record's key id shows).
    assert!(
        stored.contains("kid") && stored.contains("Authorization"),
        "{stored}"
    );
    assert_clean("the store", &stored);

    // Rotation of the signing secret, a disable with a reason, an enable.
    let rotate = [
        &add[..],
        &[
            "--secret",
            NEW_SECRET,
            "--secret",
            SECRET,
            "--secret-expires",
            "7d",
            "--update",
        ],
    ]
    .concat();
    let out = run(Some(KEY_A), &rotate);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(
        Some(KEY_A),
        &["endpoint", "disable", "shop", "--reason", "migrating"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(run(Some(KEY_A), &["endpoint", "enable", "shop"])
        .status
        .success());
    assert_clean("the store", &dump(store, ns).await);

    // Key rotation: B first, A listed; rekey; then B alone reads, A alone
    // and no key at all name the key they lack.
    let both = format!("{KEY_B},{KEY_A}");
    let out = run(Some(&both), &["endpoint", "rekey"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 endpoint(s) re-encrypted under key b"));
    let out = run(Some(KEY_B), &["endpoint", "show", "shop", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["previous_secrets"].as_array().unwrap().len(), 1);
    assert_clean("show", &text(&out.stdout));
    for key in [Some(KEY_A), None] {
        let out = run(key, &["endpoint", "show", "shop"]);
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains("key \"b\""), "{err}");
    }
    assert_clean("the store", &dump(store, ns).await);

    // The audit trail.
    let out = run(Some(KEY_B), &["endpoint", "history", "shop", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let history = text(&out.stdout);
    assert_clean("history", &history);
    let entries: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["change"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "secrets_rotated",
            "disabled",
            "enabled",
            "rekeyed"
        ]
    );
    assert!(entries
        .iter()
        .all(|e| e["actor"] == "hookgate-cli:auditor" && e["at_ms"].as_i64().unwrap() > 0));
    assert_eq!(entries[2]["change"]["reason"], "migrating");
    assert_eq!(entries[4]["change"]["key_id"], "b");
    let out = run(Some(KEY_B), &["endpoint", "history", "shop"]);
    assert!(text(&out.stdout).contains("disabled: migrating"));
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_endpoints_rotation_and_history() {
    for store in stores() {
        let ns = format!("es{:010x}", rand::random::<u64>() & 0xff_ffff_ffff);
        let result = futures_like_catch(scenario(store.clone(), ns.clone())).await;
        cli_support::cleanup(&store, &ns).await;
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Run `fut` in its own task so a failed assertion still lets the cleanup run.
async fn futures_like_catch(
    fut: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::any::Any + Send>> {
    tokio::spawn(fut).await.map_err(|e| e.into_panic())
}
