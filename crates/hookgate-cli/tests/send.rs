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
        &["send", &url, "--secret", SECRET, "--data", r#"{"a":1}"#],
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
