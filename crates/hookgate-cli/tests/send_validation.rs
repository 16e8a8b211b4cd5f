//! `hookgate send` refuses settings and ids it cannot honour before sending
//! anything (exit 2), instead of looping or dead-lettering at delivery time
//! (issue 8, item 10).

mod send_support;

use send_support::{hookgate, stderr, Receiver, SECRET};

async fn send(url: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "send",
        url,
        "--secret",
        SECRET,
        "--data",
        "{}",
        "--allow-private",
        "--allow-http",
        "--max-attempts",
        "2",
    ];
    args.extend_from_slice(extra);
    hookgate(&args, None).await
}

#[tokio::test]
async fn zero_base_delay_is_a_usage_error() {
    let receiver = Receiver::start(&[], 500).await;
    let out = send(&receiver.url(), &["--base-delay", "0s"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("base delay must be greater than zero"));
    assert_eq!(receiver.count(), 0);
}

#[tokio::test]
async fn ids_that_cannot_be_a_header_value_are_usage_errors() {
    let receiver = Receiver::start(&[], 200).await;
    let long = "x".repeat(300);
    for id in ["has space", "caf\u{e9}", long.as_str()] {
        let out = send(&receiver.url(), &["--id", id]).await;
        assert_eq!(out.status.code(), Some(2), "{id}: {}", stderr(&out));
        assert!(stderr(&out).contains("invalid --id"), "{}", stderr(&out));
    }
    assert_eq!(receiver.count(), 0);
    // A valid id goes through.
    let out = send(&receiver.url(), &["--id", "evt_42.a-b:c"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(receiver.seen()[0].id.as_deref(), Some("evt_42.a-b:c"));
}
