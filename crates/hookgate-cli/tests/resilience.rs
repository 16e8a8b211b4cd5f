//! `hookgate send --failover` and the resilience flags of `hookgate
//! endpoint add` / `show`: a one-shot send whose primary is not listening
//! reaches the backup; the flags are stored and `show` prints them with
//! the breakers' state.

mod send_support;

use send_support::{
    hookgate, namespace, redis_url, skip_unreachable, stderr, stdout, Receiver, SECRET,
};

#[tokio::test]
async fn send_fails_over_to_the_backup_url() {
    let backup = Receiver::start(&[], 200).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let primary = format!("http://127.0.0.1:{closed}/hook");
    let out = hookgate(
        &[
            "send",
            &primary,
            "--failover",
            &backup.url(),
            "--secret",
            SECRET,
            "--data",
            r#"{"a":1}"#,
            "--id",
            "msg_failover",
            "--base-delay",
            "10ms",
            "--allow-private",
            "--allow-http",
        ],
        None,
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("attempt 1: error"), "{text}");
    assert!(text.contains("attempt 2: HTTP 200"), "{text}");
    let seen = backup.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].valid);
    assert_eq!(seen[0].id.as_deref(), Some("msg_failover"));
}

#[tokio::test]
async fn endpoint_add_stores_resilience_flags_and_show_prints_breakers() {
    let queue = match hookgate_sender::queue::RedisQueue::connect(&redis_url()).await {
        Ok(q) => q,
        Err(e) => {
            skip_unreachable("Redis", &e);
            return;
        }
    };
    let ns = namespace();
    let queue = queue.with_prefix(&format!("{ns}:q:")).unwrap();
    let store = redis_url();
    let base = ["--store", store.as_str(), "--namespace", ns.as_str()];
    let run = |args: Vec<&str>| {
        let mut all = args;
        all.extend_from_slice(&base);
        let all: Vec<String> = all.iter().map(|s| (*s).to_owned()).collect();
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            hookgate(&refs, None).await
        }
    };
    let add = run(vec![
        "endpoint",
        "add",
        "shop",
        "--url",
        "https://a.example.com/h",
        "--url",
        "https://b.example.com/h",
        "--scheme",
        "standard",
        "--secret",
        SECRET,
        "--tier",
        "best-effort",
        "--health-url",
        "https://a.example.com/health",
        "--rate-limit",
        "50/s",
        "--max-in-flight",
        "4",
        "--breaker-failures",
        "7",
        "--breaker-cooldown",
        "45s",
    ])
    .await;
    assert!(add.status.success(), "{}", stderr(&add));
    let bad = run(vec![
        "endpoint",
        "add",
        "x",
        "--url",
        "https://a.example.com/h",
        "--scheme",
        "standard",
        "--secret",
        SECRET,
        "--rate-limit",
        "fast",
    ])
    .await;
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));

    let show = run(vec!["endpoint", "show", "shop", "--json"]).await;
    assert!(show.status.success(), "{}", stderr(&show));
    let v: serde_json::Value = serde_json::from_str(&stdout(&show)).unwrap();
    assert_eq!(v["tier"], "best-effort");
    assert_eq!(v["rate_limit_per_sec"], 50.0);
    assert_eq!(v["max_in_flight"], 4);
    assert_eq!(v["breaker"]["failures"], 7);
    assert_eq!(v["breaker"]["cooldown_ms"], 45_000);
    assert_eq!(v["health_url"], "https://a.example.com/health");
    assert_eq!(v["breakers"].as_array().unwrap().len(), 2);
    assert_eq!(v["breakers"][0]["state"], "closed");

    // A breaker opened by a worker shows as open.
    let ep = hookgate_sender::Queue::get_endpoint(&queue, "shop")
        .await
        .unwrap()
        .unwrap();
    let mut b = hookgate_sender::breaker::BreakerState::default();
    for i in 0..7 {
        b.record(&ep.breaker, false, hookgate_sender::now_ms() + i);
    }
    assert!(hookgate_sender::Queue::swap_endpoint_state(
        &queue,
        "shop",
        "breaker:0",
        0,
        &b.encode()
    )
    .await
    .unwrap());
    let text = run(vec!["endpoint", "show", "shop"]).await;
    assert!(
        stdout(&text).contains("breaker 1: open (7 failures in a row)"),
        "{}",
        stdout(&text)
    );
    assert!(
        stdout(&text).contains("breaker 2: closed"),
        "{}",
        stdout(&text)
    );
    // Held messages of a disabled endpoint go to the DLQ on request.
    let msg = hookgate_sender::Message::new("t", "{}").with_id("held1");
    hookgate_sender::Queue::enqueue(&queue, "shop", &msg)
        .await
        .unwrap();
    let leased = hookgate_sender::Queue::lease(&queue, 10, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    for l in leased {
        hookgate_sender::Queue::settle(
            &queue,
            &l.job.key,
            &l.token,
            None,
            hookgate_sender::queue::Transition::Hold,
        )
        .await
        .unwrap();
    }
    let purged = run(vec!["endpoint", "purge-held", "shop"]).await;
    assert!(purged.status.success(), "{}", stderr(&purged));
    assert!(
        stdout(&purged).contains("1 held messages moved"),
        "{}",
        stdout(&purged)
    );
    assert_eq!(hookgate_sender::Queue::stats(&queue).await.unwrap().dead, 1);
    queue.delete_all().await.unwrap();
}
