//! The Postgres queue's lease statement at scale: fills a fresh schema with
//! `ROWS` deliveries (default 1,000,000: 70 % scheduled, half of them due,
//! 20 % delivered, 10 % dead), runs `ANALYZE`, and prints the lease plan from
//! [`PostgresQueue::explain_lease`] (rolled back: nothing is leased). The
//! schema is dropped at the end.
//!
//! ```sh
//! scripts/explain-queue.sh            # or:
//! cargo run -p hookgate-sender --features postgres --example explain_lease -- 1000000
//! ```
//!
//! `HOOKGATE_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).

use std::time::Instant;

use hookgate_sender::queue::PostgresQueue;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rows: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let url = std::env::var("HOOKGATE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("hg_explain_{}", std::process::id());
    let queue = PostgresQueue::connect(&url).await?.with_schema(&schema)?;
    queue.migrate().await?;
    let result = run(&url, &schema, &queue, rows).await;
    queue.drop_tables().await?;
    result
}

async fn run(
    url: &str,
    schema: &str,
    queue: &PostgresQueue,
    rows: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(conn);
    let started = Instant::now();
    let rows_i = i64::try_from(rows)?;
    client
        .execute(
            &format!(
                "INSERT INTO \"{schema}\".hookgate_deliveries
                   (endpoint, message_id, event_type, payload, created_at_ms, state, attempts,
                    next_attempt_at, finished_at)
                 SELECT 'ep-' || (g % 500), 'msg_' || g, 'order.paid', '\\x7b7d'::bytea, now_ms,
                        CASE WHEN g % 10 < 7 THEN 'scheduled'
                             WHEN g % 10 < 9 THEN 'delivered' ELSE 'dead' END,
                        CASE WHEN g % 10 < 7 THEN 0 ELSE 1 END,
                        CASE WHEN g % 2 = 0 THEN now_ms - 1000 ELSE now_ms + 3600000 END,
                        CASE WHEN g % 10 < 7 THEN NULL ELSE now_ms END
                   FROM generate_series(1, $1::bigint) AS g,
                        (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms) AS t"
            ),
            &[&rows_i],
        )
        .await?;
    client
        .batch_execute(&format!("ANALYZE \"{schema}\".hookgate_deliveries"))
        .await?;
    let size: String = client
        .query_one(
            &format!(
                "SELECT pg_size_pretty(pg_total_relation_size('\"{schema}\".hookgate_deliveries'))"
            ),
            &[],
        )
        .await?
        .get(0);
    println!(
        "{rows} deliveries inserted and analyzed in {:.1} s (table + indexes: {size})\n",
        started.elapsed().as_secs_f64()
    );
    for max in [1, 100] {
        println!("lease of up to {max}:");
        println!("{}\n", queue.explain_lease(max).await?);
    }
    drop(client);
    let _ = conn.await;
    Ok(())
}
