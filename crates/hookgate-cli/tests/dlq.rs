//! `hookgate send --store` and `hookgate dlq` against the real Postgres and
//! Redis (skipped when unreachable, failing under `CI=true`), each run in a
//! fresh namespace that is removed afterwards.

mod send_support;

use std::sync::Arc;

use hookgate_sender::{queue::DeliveryKey, Queue};
use send_support::{hookgate, namespace, stderr, stdout, Receiver, SECRET};

/// Send `id` to `endpoint` at `url`, failing (the receiver answers 500) into the store.
async fn send_failing(store: &str, ns: &str, url: &str, endpoint: &str, id: &str) {
    let body = format!(r#"{{"msg":"{id}"}}"#);
    let out = hookgate(
        &[
            "send",
            url,
            "--secret",
            SECRET,
            "--data",
            &body,
            "--id",
            id,
            "--endpoint",
            endpoint,
            "--allow-private",
            "--allow-http",
            "--max-attempts",
            "2",
            "--base-delay",
            "10ms",
            "--store",
            store,
            "--namespace",
            ns,
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("dead letter"), "{}", stderr(&out));
}

async fn dlq(args: &[&str], store: &str, ns: &str) -> std::process::Output {
    let mut all = vec!["dlq"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--store", store, "--namespace", ns]);
    hookgate(&all, None).await
}

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The whole story against one store.
async fn story(store: &str, ns: &str, queue: Arc<dyn Queue>) {
    // Four sends fail (2 attempts each) and land in the store's DLQ.
    let receiver = Receiver::start(&[], 500).await;
    let url = receiver.url();
    for id in ["m1", "m2", "m3"] {
        send_failing(store, ns, &url, "ep", id).await;
    }
    send_failing(store, ns, &url, "other", "m4").await;
    assert_eq!(receiver.count(), 8);
    assert_eq!(queue.stats().await.unwrap().dead, 4);

    // list: table and JSON, filtered by endpoint.
    let out = dlq(&["list"], store, ns).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("DEAD AT"), "{text}");
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text.contains("exhausted (last: HTTP 500"));
    let out = dlq(&["list", "--json", "--endpoint", "ep"], store, ns).await;
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["endpoint"] == "ep"));
    assert!(rows
        .iter()
        .all(|r| r["attempts"].as_array().unwrap().len() == 2));
    let out = dlq(&["list", "--json", "--limit", "2"], store, ns).await;
    assert_eq!(json_lines(&out).len(), 2);
    let out = dlq(&["list", "--json", "--since", "1h"], store, ns).await;
    assert_eq!(json_lines(&out).len(), 4);
    // Several processes ran since the last one was filed.
    let out = dlq(&["list", "--json", "--since", "1ms"], store, ns).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json_lines(&out).len(), 0);

    // show: payload and history.
    let out = dlq(&["show", "m1", "--json"], store, ns).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = &json_lines(&out)[0];
    assert_eq!(shown["message_id"], "m1");
    assert_eq!(shown["payload"]["msg"], "m1");
    assert_eq!(shown["attempts"][0]["status"], 500);
    let out = dlq(&["show", "m1"], store, ns).await;
    assert!(stdout(&out).contains("reason:     exhausted (last: HTTP 500"));
    let out = dlq(&["show", "nope"], store, ns).await;
    assert_eq!(out.status.code(), Some(1));

    // The receiver recovers: replay one, then all of endpoint `ep`.
    receiver.set_fallback(200);
    let out = dlq(
        &["replay", "m1", "--allow-private", "--allow-http"],
        store,
        ns,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("m1 (ep): delivered"),
        "{}",
        stdout(&out)
    );
    let out = dlq(
        &[
            "replay",
            "--all",
            "--endpoint",
            "ep",
            "--allow-private",
            "--allow-http",
            "--json",
        ],
        store,
        ns,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let outcomes = json_lines(&out);
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| o["outcome"] == "delivered"));
    let seen = receiver.seen();
    assert_eq!(seen.len(), 11);
    // Same message ids on replay, valid signatures throughout.
    assert!(seen.iter().all(|s| s.valid));
    assert_eq!(
        seen.iter()
            .filter(|s| s.id.as_deref() == Some("m1"))
            .count(),
        3
    );
    let left = json_lines(&dlq(&["list", "--json"], store, ns).await);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["message_id"], "m4");

    // A replay that fails again keeps the dead letter, history appended.
    receiver.set_fallback(503);
    let out = dlq(
        &["replay", "m4", "--allow-private", "--allow-http"],
        store,
        ns,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("m4 (other): failed: exhausted (last: HTTP 503"),
        "{}",
        stdout(&out)
    );
    let key = DeliveryKey {
        endpoint: "other".into(),
        message_id: "m4".into(),
    };
    let dead = queue.get_dead(&key).await.unwrap().unwrap();
    let statuses: Vec<_> = dead.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(503)]);

    // Without --allow-private the replay is refused and nothing is sent.
    let before = receiver.count();
    let out = dlq(&["replay", "--all"], store, ns).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("--allow-private"), "{}", stdout(&out));
    assert_eq!(receiver.count(), before);

    // --enqueue puts it back into the store's queue instead.
    let out = dlq(&["replay", "m4", "--enqueue"], store, ns).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending(), stats.dead), (1, 0));

    // purge.
    send_failing(store, ns, &url, "ep", "m5").await;
    send_failing(store, ns, &url, "ep", "m6").await;
    let out = dlq(&["purge", "m5"], store, ns).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Nothing to purge: said so, exit 1.
    let out = dlq(&["purge", "m5"], store, ns).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing purged"), "{}", stderr(&out));
    // --all asks first; without a terminal and without --yes nothing goes.
    let out = dlq(&["purge", "--all"], store, ns).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert_eq!(queue.stats().await.unwrap().dead, 1);
    let out = dlq(&["purge", "--all", "--dry-run"], store, ns).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("m6 (ep): would purge"));
    assert_eq!(queue.stats().await.unwrap().dead, 1);
    let out = dlq(&["purge", "--all", "--yes"], store, ns).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("m6 (ep): purged"));
    assert_eq!(queue.stats().await.unwrap().dead, 0);

    // send --store never re-points a stored endpoint: another URL under the
    // same id is refused and the stored endpoint is unchanged.
    let other = Receiver::start(&[], 200).await;
    let out = hookgate(
        &[
            "send",
            &other.url(),
            "--secret",
            SECRET,
            "--data",
            "{}",
            "--endpoint",
            "ep",
            "--allow-private",
            "--allow-http",
            "--store",
            store,
            "--namespace",
            ns,
        ],
        None,
    )
    .await;
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another configuration"),
        "{}",
        stderr(&out)
    );
    assert_eq!(other.count(), 0);
    let ep = queue.get_endpoint("ep").await.unwrap().unwrap();
    assert_eq!(ep.urls, std::slice::from_ref(&url));
    // A disabled endpoint stays disabled when the same one is registered again.
    queue.set_endpoint_disabled("ep", true).await.unwrap();
    let before = receiver.count();
    let out = hookgate(
        &[
            "send",
            &url,
            "--secret",
            SECRET,
            "--data",
            "{}",
            "--endpoint",
            "ep",
            "--allow-private",
            "--allow-http",
            "--store",
            store,
            "--namespace",
            ns,
        ],
        None,
    )
    .await;
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("disabled"), "{}", stderr(&out));
    assert!(queue.get_endpoint("ep").await.unwrap().unwrap().disabled);
    assert_eq!(receiver.count(), before);

    // `dlq list | head -1` exits 0 (a closed pipe is not an error).
    for i in 0..1500 {
        let id = format!("bulk{i:04}");
        let dead = hookgate_sender::queue::DeadLetter {
            key: DeliveryKey {
                endpoint: "ep".into(),
                message_id: id.clone(),
            },
            message: hookgate_sender::Message::new("t", "{}").with_id(id),
            attempts: Vec::new(),
            reason: hookgate_sender::queue::DeadReason::Other {
                detail: "x".repeat(100),
            },
            dead_at_ms: 1_700_000_000_000 + i,
        };
        assert!(queue.add_dead_letter(&dead).await.unwrap());
    }
    let bin = env!("CARGO_BIN_EXE_hookgate").to_owned();
    let (store_s, ns_s) = (store.to_owned(), ns.to_owned());
    let piped = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg("-c")
            .arg(r#"set -o pipefail; "$0" dlq list --store "$1" --namespace "$2" | head -1"#)
            .arg(bin)
            .arg(store_s)
            .arg(ns_s)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(piped.status.code(), Some(0), "{}", stderr(&piped));
    assert!(stdout(&piped).starts_with("DEAD AT"));
    assert!(!stderr(&piped).contains("panicked"), "{}", stderr(&piped));
}

#[tokio::test]
async fn postgres_store() {
    use hookgate_sender::queue::PostgresQueue;
    let url = send_support::postgres_url();
    let ns = namespace();
    let queue = match PostgresQueue::connect(&url).await {
        Ok(q) => q.with_schema(&ns).unwrap(),
        Err(e) => {
            send_support::skip_unreachable("Postgres", &e);
            return;
        }
    };
    let queue = Arc::new(queue);
    let result = tokio::spawn({
        let (url, ns, q) = (url.clone(), ns.clone(), queue.clone());
        async move { story(&url, &ns, q).await }
    })
    .await;
    queue.drop_tables().await.unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn redis_store() {
    use hookgate_sender::queue::RedisQueue;
    let url = send_support::redis_url();
    let ns = namespace();
    let queue = match RedisQueue::connect(&url).await {
        Ok(q) => q.with_prefix(&format!("{ns}:q:")).unwrap(),
        Err(e) => {
            send_support::skip_unreachable("Redis", &e);
            return;
        }
    };
    let queue = Arc::new(queue);
    let result = tokio::spawn({
        let (url, ns, q) = (url.clone(), ns.clone(), queue.clone());
        async move { story(&url, &ns, q).await }
    })
    .await;
    queue.delete_all().await.unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}
