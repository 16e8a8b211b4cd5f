//! `hookgate send` against receivers on 127.0.0.1: the SSRF guard refuses
//! loopback without `--allow-private` (and nothing is sent), retries are
//! printed per attempt, exit codes 0/1/2, `--data` from a file and stdin.

mod send_support;

use send_support::{hookgate, stderr, stdout, Receiver, SECRET};

#[tokio::test]
async fn loopback_without_allow_private_is_refused_and_nothing_is_sent() {
    let receiver = Receiver::start(&[], 200).await;
    let url = receiver.url();
    let out = hookgate(
        &[
            "send",
            &url,
            "--allow-http",
            "--secret",
            SECRET,
            "--data",
            r#"{"a":1}"#,
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("destination 127.0.0.1 is refused by the SSRF guard (loopback)"),
        "{err}"
    );
    assert!(err.contains("--allow-private"), "{err}");
    assert!(stdout(&out).contains("attempt 1: error: refused"));
    assert_eq!(receiver.count(), 0);
}

#[tokio::test]
async fn plain_http_without_allow_http_is_refused_and_nothing_is_sent() {
    let receiver = Receiver::start(&[], 200).await;
    let url = receiver.url();
    let out = hookgate(
        &[
            "send",
            &url,
            "--allow-private",
            "--secret",
            SECRET,
            "--data",
            "{}",
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("URL 1 is plain http://"), "{err}");
    assert!(err.contains("--allow-http"), "{err}");
    assert_eq!(receiver.count(), 0);
}

#[tokio::test]
async fn delivers_signed_with_allow_private() {
    let receiver = Receiver::start(&[], 200).await;
    let url = receiver.url();
    let out = hookgate(
        &[
            "send",
            &url,
            "--secret",
            SECRET,
            "--data",
            r#"{"order":7}"#,
            "--id",
            "msg_cli_1",
            "--allow-private",
            "--allow-http",
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("attempt 1: HTTP 200 OK in "),
        "{}",
        stdout(&out)
    );
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].valid);
    assert_eq!(seen[0].id.as_deref(), Some("msg_cli_1"));
    assert_eq!(&seen[0].body[..], br#"{"order":7}"#);
}

#[tokio::test]
async fn allow_list_opens_loopback_too() {
    let receiver = Receiver::start(&[], 200).await;
    let url = receiver.url();
    let out = hookgate(
        &[
            "send",
            &url,
            "--secret",
            SECRET,
            "--data",
            "{}",
            "--allow",
            "127.0.0.0/8",
            "--allow-http",
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn retries_are_printed_until_delivered() {
    let receiver = Receiver::start(&[503, 500], 200).await;
    let url = receiver.url();
    let out = hookgate(
        &[
            "send",
            &url,
            "--secret",
            SECRET,
            "--data",
            "{}",
            "--allow-private",
            "--allow-http",
            "--base-delay",
            "10ms",
            "--max-delay",
            "50ms",
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("attempt")).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("attempt 1: HTTP 503 Service Unavailable in "));
    assert!(lines[0].contains("; retrying in "));
    assert!(lines[1].starts_with("attempt 2: HTTP 500 Internal Server Error in "));
    assert!(lines[2].starts_with("attempt 3: HTTP 200 OK in "));
    assert!(lines[2].ends_with("; delivered"));
    let seen = receiver.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.valid && s.id == seen[0].id));
}

#[tokio::test]
async fn exhausted_exits_1() {
    let receiver = Receiver::start(&[], 500).await;
    let url = receiver.url();
    let out = hookgate(
        &[
            "send",
            &url,
            "--secret",
            SECRET,
            "--data",
            "{}",
            "--allow-private",
            "--allow-http",
            "--max-attempts",
            "2",
            "--base-delay",
            "10ms",
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not delivered: exhausted (last: HTTP 500"),
        "{}",
        stderr(&out)
    );
    assert_eq!(receiver.count(), 2);
}

#[tokio::test]
async fn permanent_400_is_not_retried() {
    let receiver = Receiver::start(&[400], 200).await;
    let url = receiver.url();
    let out = hookgate(
        &[
            "send",
            &url,
            "--secret",
            SECRET,
            "--data",
            "{}",
            "--allow-private",
            "--allow-http",
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("permanent: HTTP 400 Bad Request"));
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn data_from_file_and_stdin() {
    let receiver = Receiver::start(&[], 200).await;
    let url = receiver.url();
    let path = std::env::temp_dir().join(format!("hookgate-send-{}.json", rand::random::<u64>()));
    std::fs::write(&path, br#"{"from":"file"}"#).unwrap();
    let at = format!("@{}", path.display());
    let out = hookgate(
        &[
            "send",
            &url,
            "--secret",
            SECRET,
            "--data",
            &at,
            "--allow-private",
            "--allow-http",
        ],
        None,
    )
    .await;
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = hookgate(
        &[
            "send",
            &url,
            "--secret",
            SECRET,
            "--data",
            "-",
            "--allow-private",
            "--allow-http",
        ],
        Some(br#"{"from":"stdin"}"#),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bodies: Vec<_> = receiver.seen().into_iter().map(|s| s.body).collect();
    assert_eq!(&bodies[0][..], br#"{"from":"file"}"#);
    assert_eq!(&bodies[1][..], br#"{"from":"stdin"}"#);
}

#[tokio::test]
async fn usage_errors_exit_2() {
    for args in [
        &[
            "send",
            "http://127.0.0.1:9/",
            "--secret",
            SECRET,
            "--data",
            "{}",
            "--base-delay",
            "soon",
        ][..],
        &["send", "not-a-url", "--secret", SECRET, "--data", "{}"],
        &[
            "send",
            "http://127.0.0.1:9/",
            "--secret",
            "whsec_!!",
            "--data",
            "{}",
        ],
        &[
            "send",
            "http://127.0.0.1:9/",
            "--secret",
            SECRET,
            "--data",
            "@/nonexistent/file",
        ],
        &[
            "send",
            "http://127.0.0.1:9/",
            "--secret",
            SECRET,
            "--data",
            "{}",
            "--max-attempts",
            "0",
        ],
        &[
            "send",
            "http://127.0.0.1:9/",
            "--secret",
            SECRET,
            "--data",
            "{}",
            "--store",
            "memory",
        ],
        &[
            "send",
            "http://127.0.0.1:9/",
            "--secret",
            SECRET,
            "--data",
            "{}",
            "--allow",
            "nope",
        ],
    ] {
        let out = hookgate(args, None).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty());
        // The secret is never echoed.
        assert!(!stderr(&out).contains("whsec_!!"), "{}", stderr(&out));
    }
}

/// A receiver answering every request 503 with `Retry-After: <secs>`;
/// returns its URL and a request counter.
async fn retry_after_receiver(
    secs: u64,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{atomic::AtomicUsize, Arc};
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", secs.to_string())],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), hits)
}

/// A Redis queue in a fresh namespace, or `None` when Redis is unreachable.
async fn redis_store() -> Option<(String, hookgate_sender::queue::RedisQueue)> {
    let ns = send_support::namespace();
    match hookgate_sender::queue::RedisQueue::connect(&send_support::redis_url()).await {
        Ok(q) => Some((ns.clone(), q.with_prefix(&format!("{ns}:q:")).unwrap())),
        Err(e) => {
            send_support::skip_unreachable("Redis", &e);
            None
        }
    }
}

async fn dead_reason(
    q: &hookgate_sender::queue::RedisQueue,
    id: &str,
) -> Option<hookgate_sender::queue::DeadReason> {
    use hookgate_sender::Queue as _;
    let key = hookgate_sender::queue::DeliveryKey {
        endpoint: "ep".into(),
        message_id: id.into(),
    };
    q.get_dead(&key).await.unwrap().map(|d| d.reason)
}

/// Issue 8, item 8: a `Retry-After` longer than `--max-delay` ends the
/// one-shot send as a dead letter at once, not a silent hour.
#[tokio::test]
async fn retry_after_beyond_max_delay_ends_as_a_dead_letter() {
    let Some((ns, q)) = redis_store().await else {
        return;
    };
    let (url, hits) = retry_after_receiver(3600).await;
    let store = send_support::redis_url();
    let started = std::time::Instant::now();
    let out = hookgate(
        &[
            "send",
            &url,
            "--secret",
            SECRET,
            "--data",
            "{}",
            "--id",
            "m-ra",
            "--endpoint",
            "ep",
            "--allow-private",
            "--allow-http",
            "--max-delay",
            "2s",
            "--store",
            &store,
            "--namespace",
            &ns,
        ],
        None,
    )
    .await;
    let reason = dead_reason(&q, "m-ra").await;
    q.delete_all().await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--max-delay"), "{}", stderr(&out));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        matches!(
            reason,
            Some(hookgate_sender::queue::DeadReason::Other { .. })
        ),
        "{reason:?}"
    );
}

/// Issue 8, item 8: Ctrl-C (SIGINT) while `send --store` waits for a retry
/// dead-letters the message with the typed reason `interrupted`, and the
/// command says so. On main the message was lost.
#[cfg(unix)]
#[tokio::test]
async fn interrupted_send_is_dead_lettered_as_interrupted() {
    let Some((ns, q)) = redis_store().await else {
        return;
    };
    let (url, hits) = retry_after_receiver(20).await;
    let store = send_support::redis_url();
    let args: Vec<String> = [
        "send",
        &url,
        "--secret",
        SECRET,
        "--data",
        "{}",
        "--id",
        "m-int",
        "--endpoint",
        "ep",
        "--allow-private",
        "--allow-http",
        "--max-delay",
        "60s",
        "--store",
        &store,
        "--namespace",
        &ns,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(&args)
        .env_remove("HOOKGATE_SECRET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while hits.load(std::sync::atomic::Ordering::SeqCst) == 0
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await; // now waiting 20 s
    let status = std::process::Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let reason = dead_reason(&q, "m-int").await;
    q.delete_all().await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert_eq!(
        reason,
        Some(hookgate_sender::queue::DeadReason::Interrupted)
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}
