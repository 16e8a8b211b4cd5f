//! Postgres queue tests beyond the conformance suite: the transactional
//! outbox, concurrent lessors (`FOR UPDATE SKIP LOCKED`), migrations,
//! validation and an unreachable server. Real PostgreSQL; see `support`.
#![cfg(feature = "postgres")]

mod support;

use std::time::Duration;

use hookgate_sender::{
    queue::{PostgresQueue, QueueErrorKind},
    Message, Queue,
};

/// A direct connection (the caller's own), as an application would hold.
async fn own_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&support::postgres_url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn outbox_commits_and_rolls_back_with_the_callers_data() {
    let Some(q) = support::pg::fresh().await else {
        return;
    };
    let body = async {
        let mut client = own_client().await;
        let orders = format!("\"{}\".orders", q.schema());
        client
            .batch_execute(&format!("CREATE TABLE {orders} (id bigint PRIMARY KEY)"))
            .await
            .unwrap();

        // Rolled back: neither the order nor the webhook exists.
        let tx = client.transaction().await.unwrap();
        tx.execute(&format!("INSERT INTO {orders} VALUES (1)"), &[])
            .await
            .unwrap();
        q.enqueue_in(
            &tx,
            "ep",
            &Message::new("order.created", "1").with_id("rolled-back"),
        )
        .await
        .unwrap();
        // Not visible outside the transaction before commit.
        assert!(q
            .lease(10, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty());
        tx.rollback().await.unwrap();
        assert!(q
            .lease(10, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(q.stats().await.unwrap().pending(), 0);

        // Committed: both exist, and the webhook is leased.
        let tx = client.transaction().await.unwrap();
        tx.execute(&format!("INSERT INTO {orders} VALUES (2)"), &[])
            .await
            .unwrap();
        q.enqueue_in(
            &tx,
            "ep",
            &Message::new("order.created", "2").with_id("committed"),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let leased = q.lease(10, Duration::from_secs(30)).await.unwrap();
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].job.message.id, "committed");
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {orders}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1);

        // enqueue_in also works on a plain client (autocommit).
        q.enqueue_in(
            &client,
            "ep",
            &Message::new("order.created", "3").with_id("plain"),
        )
        .await
        .unwrap();
        assert_eq!(q.lease(10, Duration::from_secs(30)).await.unwrap().len(), 1);
    };
    support::with_cleanup(body, support::pg::drop_schema(&q)).await;
}

#[tokio::test]
async fn two_lessors_never_lease_the_same_message() {
    let Some(q) = support::pg::fresh_with_pool(8).await else {
        return;
    };
    let (a, b) = {
        let q2 = q.clone();
        let mut out = (0, 0);
        support::with_cleanup(
            async { out = support::two_lessors_never_share(q2, 1000).await },
            support::pg::drop_schema(&q),
        )
        .await;
        out
    };
    eprintln!("lessor a took {a}, lessor b took {b}");
}

#[tokio::test]
async fn migrate_is_idempotent_and_concurrent_safe() {
    let Some(q) = support::pg::fresh().await else {
        return;
    };
    let body = async {
        let url = support::postgres_url();
        // Other handles on the same schema migrate concurrently.
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let url = url.clone();
            let schema = q.schema().to_owned();
            tasks.push(tokio::spawn(async move {
                let other = PostgresQueue::connect_with_pool_size(&url, 1)
                    .await
                    .unwrap()
                    .with_schema(&schema)
                    .unwrap();
                other.migrate().await.unwrap();
                other.migrate().await.unwrap();
                other
            }));
        }
        q.enqueue("ep", &Message::new("t", "x").with_id("one"))
            .await
            .unwrap();
        for t in tasks {
            let other = t.await.unwrap();
            // Same tables: every handle sees the message.
            assert_eq!(other.stats().await.unwrap().pending(), 1);
        }
        // A table prefix isolates a second queue within the schema.
        let prefixed = q.clone().with_table_prefix("tenant2_").unwrap();
        assert_eq!(prefixed.stats().await.unwrap().pending(), 0);
        prefixed.drop_tables().await.unwrap();
        assert_eq!(q.stats().await.unwrap().pending(), 1);
    };
    support::with_cleanup(body, support::pg::drop_schema(&q)).await;
}

#[tokio::test]
async fn invalid_names_and_urls_are_typed_errors() {
    let err = PostgresQueue::connect("not a url at all ::")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), QueueErrorKind::Config, "{err}");
    let Some(q) = support::pg::fresh().await else {
        return;
    };
    let q2 = q.clone();
    let body = async move {
        for bad in ["", "1abc", "has space", "x\";drop table y;--", "UPPER"] {
            let err = q2.clone().with_schema(bad).unwrap_err();
            assert_eq!(err.kind(), QueueErrorKind::Config, "{bad:?}");
        }
        for bad in ["1x", "a-b", "x\""] {
            let err = q2.clone().with_table_prefix(bad).unwrap_err();
            assert_eq!(err.kind(), QueueErrorKind::Config, "{bad:?}");
        }
        assert!(q2.clone().with_table_prefix("").is_ok());
    };
    support::with_cleanup(body, support::pg::drop_schema(&q)).await;
}

#[tokio::test]
async fn unreachable_server_is_unavailable_within_a_bounded_time() {
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/test",
        support::closed_port()
    );
    let result = tokio::time::timeout(Duration::from_secs(30), PostgresQueue::connect(&url))
        .await
        .expect("connect gave up within 30 s");
    let err = result.unwrap_err();
    assert_eq!(err.kind(), QueueErrorKind::Unavailable, "{err}");
    assert!(std::error::Error::source(&err).is_some());
}

/// A statement cancelled by the server's `statement_timeout` (SQLSTATE
/// 57014) is `Unavailable`, as in the dedup store: a worker treats it as the
/// store being down, not as a bug (issue 16, item 6).
#[tokio::test]
async fn statement_timeout_is_unavailable() {
    let Some(q) = support::pg::fresh().await else {
        return;
    };
    let body = async {
        let url = support::postgres_url();
        let sep = if url.contains('?') { '&' } else { '?' };
        let timed =
            PostgresQueue::connect(&format!("{url}{sep}options=-c%20statement_timeout%3D200"))
                .await
                .unwrap()
                .with_schema(q.schema())
                .unwrap();
        timed.migrate().await.unwrap();
        let mut client = own_client().await;
        let tx = client.transaction().await.unwrap();
        tx.batch_execute(&format!(
            "LOCK TABLE \"{}\".hookgate_deliveries IN ACCESS EXCLUSIVE MODE",
            q.schema()
        ))
        .await
        .unwrap();
        let err = timed
            .lease(10, Duration::from_secs(30))
            .await
            .expect_err("the lock outlasts the statement timeout");
        assert_eq!(err.kind(), QueueErrorKind::Unavailable, "{err:?}");
        tx.rollback().await.unwrap();
    };
    support::with_cleanup(body, support::pg::drop_schema(&q)).await;
}

/// Upgrading from the layout before explicit states: pending rows stay
/// scheduled and the old `dead` table's letters move into the one
/// deliveries table, listable and replayable.
#[tokio::test]
async fn migrates_the_layout_without_states() {
    let Some(q) = support::pg::fresh().await else {
        return;
    };
    let body = async {
        let s = q.schema();
        let client = own_client().await;
        // The old layout, as the previous release created it.
        client
            .batch_execute(&format!(
                r#"DROP TABLE "{s}".hookgate_deliveries, "{s}".hookgate_attempts;
                CREATE TABLE "{s}".hookgate_deliveries (
                    endpoint text COLLATE "C" NOT NULL, message_id text COLLATE "C" NOT NULL,
                    event_type text NOT NULL, payload bytea NOT NULL, created_at_ms bigint NOT NULL,
                    attempts integer NOT NULL DEFAULT 0, next_attempt_at bigint NOT NULL,
                    lease_token text, lease_until bigint, PRIMARY KEY (endpoint, message_id));
                CREATE TABLE "{s}".hookgate_attempts (
                    endpoint text COLLATE "C" NOT NULL, message_id text COLLATE "C" NOT NULL,
                    n integer NOT NULL, at_ms bigint NOT NULL, url text NOT NULL, status integer,
                    latency_ms bigint NOT NULL, error text, PRIMARY KEY (endpoint, message_id, n));
                CREATE TABLE "{s}".hookgate_dead (
                    endpoint text COLLATE "C" NOT NULL, message_id text COLLATE "C" NOT NULL,
                    event_type text NOT NULL, payload bytea NOT NULL, created_at_ms bigint NOT NULL,
                    reason text NOT NULL, dead_at bigint NOT NULL, PRIMARY KEY (endpoint, message_id));
                INSERT INTO "{s}".hookgate_deliveries (endpoint, message_id, event_type, payload,
                    created_at_ms, attempts, next_attempt_at) VALUES ('ep', 'pending', 't', '\x7b7d', 1, 2, 0);
                INSERT INTO "{s}".hookgate_dead VALUES ('ep', 'gone', 't', '\x7b7d', 1, 'exhausted: 5 attempts', 1000);
                INSERT INTO "{s}".hookgate_attempts VALUES ('ep', 'gone', 1, 900, 'https://x/', 500, 3, NULL);"#
            ))
            .await
            .unwrap();
        // A new handle runs the migration.
        let upgraded = PostgresQueue::connect(&support::postgres_url())
            .await
            .unwrap()
            .with_schema(s)
            .unwrap();
        upgraded.migrate().await.unwrap();
        let stats = upgraded.stats().await.unwrap();
        assert_eq!((stats.scheduled, stats.dead), (1, 1));
        let key = hookgate_sender::queue::DeliveryKey {
            endpoint: "ep".into(),
            message_id: "gone".into(),
        };
        let dead = upgraded.get_dead(&key).await.unwrap().unwrap();
        assert_eq!(dead.reason.to_string(), "exhausted: 5 attempts");
        assert_eq!(dead.attempts.len(), 1);
        assert!(upgraded.replay_dead(&key).await.unwrap());
        let leased = upgraded.lease(10, Duration::from_secs(30)).await.unwrap();
        assert_eq!(leased.len(), 2);
    };
    support::with_cleanup(body, support::pg::drop_schema(&q)).await;
}
