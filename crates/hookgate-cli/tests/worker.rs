//! `hookgate endpoint`, `hookgate enqueue` and `hookgate worker` as an
//! operator runs them: real processes, the machine's Postgres and Redis, a
//! `hookgate serve` receiver on loopback.
//!
//! - Two workers on one queue deliver 500 messages enqueued by
//!   `hookgate enqueue`; one is stopped with SIGTERM mid-run: every message
//!   reaches the receiver, once (its dedup store saw no duplicate).
//! - `endpoint add` refuses another configuration under a used id (stored
//!   endpoint unchanged) unless `--update`; `show` masks secrets and header
//!   values; `disable`/`enable` flip only `disabled`.
//!
//! Without a reachable server the store's case prints why and is skipped,
//! except under `CI=true`.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

mod cli_support;

use cli_support::{free_port, stores, PrivateRedis};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn hookgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("hookgate runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn namespace() -> String {
    format!("wk{:010x}", rand::random::<u64>() & 0xff_ffff_ffff)
}

struct Proc {
    child: Child,
    stdout: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(args: &[&str]) -> (Self, mpsc::Receiver<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        (Self { child, stdout }, stderr)
    }

    fn term(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Read stderr lines until each of `markers` was seen; the address after each.
fn addresses_after<const N: usize>(
    rx: &mpsc::Receiver<String>,
    markers: [&str; N],
) -> [SocketAddr; N] {
    let mut found: [Option<SocketAddr>; N] = [None; N];
    while found.iter().any(Option::is_none) {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("process prints its addresses");
        for (i, marker) in markers.iter().enumerate() {
            if let Some(rest) = line.split(marker).nth(1) {
                found[i] = Some(rest.split_whitespace().next().unwrap().parse().unwrap());
            }
        }
    }
    found.map(Option::unwrap)
}

fn replayed_duplicates(admin: SocketAddr) -> f64 {
    let body = plain_http::get_metrics(admin);
    body.lines()
        .filter(|l| {
            l.starts_with("hookgate_receiver_duplicates_total{") && l.contains("kind=\"replayed\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

mod plain_http {
    /// GET /metrics over a plain HTTP/1.0 request (no async runtime needed).
    pub(super) fn get_metrics(addr: std::net::SocketAddr) -> String {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_deliver_every_enqueued_message_once_across_a_sigterm() {
    const N: usize = 500;
    for store in stores() {
        let ns = namespace();
        let (mut serve, serve_err) = Proc::spawn(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--scheme",
            "standard",
            "--secret",
            SECRET,
        ]);
        let [addr, admin] =
            addresses_after(&serve_err, ["listening on http://", "admin on http://"]);

        let url = format!("http://{addr}/hooks");
        let add = hookgate(&[
            "endpoint",
            "add",
            "shop",
            "--url",
            &url,
            "--allow-http",
            "--scheme",
            "standard",
            "--secret",
            SECRET,
            "--store",
            &store,
            "--namespace",
            &ns,
        ]);
        assert!(add.status.success(), "{}", text(&add.stderr));

        // Enqueue from 8 threads at once, each a `hookgate enqueue` process.
        let ids: Vec<String> = (0..N).map(|n| format!("msg_{n:04}")).collect();
        std::thread::scope(|scope| {
            for chunk in ids.chunks(N / 8 + 1) {
                let (store, ns) = (&store, &ns);
                scope.spawn(move || {
                    for id in chunk {
                        let out = hookgate(&[
                            "enqueue",
                            "shop",
                            "--data",
                            &format!("{{\"id\":\"{id}\"}}"),
                            "--id",
                            id,
                            "--store",
                            store,
                            "--namespace",
                            ns,
                        ]);
                        assert!(out.status.success(), "{}", text(&out.stderr));
                        assert_eq!(text(&out.stdout).trim(), id.as_str());
                    }
                });
            }
        });
        // The same id again stores nothing new.
        let again = hookgate(&[
            "enqueue",
            "shop",
            "--data",
            "{}",
            "--id",
            "msg_0000",
            "--store",
            &store,
            "--namespace",
            &ns,
        ]);
        assert!(again.status.success(), "{}", text(&again.stderr));

        let worker_args = [
            "worker",
            "--store",
            store.as_str(),
            "--namespace",
            ns.as_str(),
            "--allow-private",
            "--allow-http",
            "--concurrency",
            "8",
            "--shutdown-grace",
            "10s",
        ];
        let (mut w1, _w1_err) = Proc::spawn(&worker_args);
        let (mut w2, _w2_err) = Proc::spawn(&worker_args);

        // Collect the receiver's JSON lines; stop one worker part-way.
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut stopped = false;
        let mut stopped_at = deadline;
        while seen.len() < N {
            assert!(
                Instant::now() < deadline,
                "{} of {N} delivered after 120 s ({store})",
                seen.len()
            );
            // What the stopped worker had leased is handed back at once, not
            // when its 60 s lease runs out.
            assert!(
                Instant::now() < stopped_at,
                "{} of {N} delivered 30 s after the SIGTERM ({store}): leases not handed back",
                seen.len()
            );
            if let Ok(line) = serve.stdout.recv_timeout(Duration::from_millis(200)) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                *seen
                    .entry(v["id"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
            if !stopped && seen.len() >= N / 4 {
                eprintln!(
                    "term at {:?} after {}",
                    std::time::SystemTime::now(),
                    seen.len()
                );
                let status = w1.term();
                eprintln!("termed at {:?}", std::time::SystemTime::now());
                assert!(status.success(), "worker exits 0 on SIGTERM: {status:?}");
                stopped = true;
                stopped_at = Instant::now() + Duration::from_secs(30);
            }
        }
        assert!(stopped);
        assert!(
            seen.values().all(|&n| n == 1),
            "{store}: an event printed twice"
        );
        assert_eq!(
            seen.keys().cloned().collect::<Vec<_>>(),
            ids,
            "{store}: every message arrived"
        );
        // No delivery reached the receiver twice (it would have been replayed from its store).
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            replayed_duplicates(admin),
            0.0,
            "{store}: a message was delivered twice"
        );
        assert!(w2.term().success());
        serve.term();
        cli_support::cleanup(&store, &ns).await;
    }
}

#[tokio::test]
async fn endpoints_are_managed_not_overwritten() {
    for store in stores() {
        let ns = namespace();
        let base = ["--store", store.as_str(), "--namespace", ns.as_str()];
        let run = |args: &[&str]| {
            let mut all = args.to_vec();
            all.extend_from_slice(&base);
            hookgate(&all)
        };
        let add = |url: &str, extra: &[&str]| {
            let mut args = vec![
                "endpoint",
                "add",
                "shop",
                "--url",
                url,
                "--scheme",
                "standard",
                "--secret",
                SECRET,
                "--header",
                "Authorization: Bearer tok_SECRET_123",
            ];
            args.extend_from_slice(extra);
            run(&args)
        };
        assert!(add("https://a.example.com/hooks", &[]).status.success());
        // The same configuration again: fine. Another one: refused, unchanged.
        assert!(add("https://a.example.com/hooks", &[]).status.success());
        let refused = add("https://b.example.com/hooks", &[]);
        assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
        assert!(
            text(&refused.stderr).contains("--update"),
            "{}",
            text(&refused.stderr)
        );
        let show = run(&["endpoint", "show", "shop", "--json"]);
        let shown: serde_json::Value = serde_json::from_str(&text(&show.stdout)).unwrap();
        assert_eq!(shown["urls"][0], "https://a.example.com/hooks");
        // Secrets and header values never printed.
        let all = format!("{}{}", text(&show.stdout), text(&show.stderr));
        assert!(
            !all.contains("MfKQ9r8G") && !all.contains("tok_SECRET_123"),
            "{all}"
        );
        assert_eq!(shown["headers"][0], "Authorization: ***");

        // Disabled stays disabled across --update; enable flips it back.
        assert!(run(&["endpoint", "disable", "shop"]).status.success());
        assert!(add("https://b.example.com/hooks", &["--update"])
            .status
            .success());
        let shown: serde_json::Value =
            serde_json::from_str(&text(&run(&["endpoint", "show", "shop", "--json"]).stdout))
                .unwrap();
        assert_eq!(shown["urls"][0], "https://b.example.com/hooks");
        assert_eq!(shown["disabled"], true);
        assert!(run(&["endpoint", "enable", "shop"]).status.success());
        let shown: serde_json::Value =
            serde_json::from_str(&text(&run(&["endpoint", "show", "shop", "--json"]).stdout))
                .unwrap();
        assert_eq!(shown["disabled"], false);
        assert_eq!(run(&["endpoint", "show", "nope"]).status.code(), Some(1));

        // Listed (masked), then removed.
        let list = run(&["endpoint", "list", "--json"]);
        let all = format!("{}{}", text(&list.stdout), text(&list.stderr));
        assert!(
            !all.contains("MfKQ9r8G") && !all.contains("tok_SECRET_123"),
            "{all}"
        );
        let listed: Vec<serde_json::Value> = text(&list.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["id"], "shop");
        assert!(run(&["endpoint", "remove", "shop"]).status.success());
        assert_eq!(run(&["endpoint", "remove", "shop"]).status.code(), Some(1));
        assert!(text(&run(&["endpoint", "list", "--json"]).stdout)
            .trim()
            .is_empty());
        cli_support::cleanup(&store, &ns).await;
    }
}

#[tokio::test]
async fn read_only_commands_leave_no_schema_behind() {
    for store in stores().into_iter().filter(|s| s.starts_with("postgres")) {
        let ns = namespace();
        for args in [
            &["dlq", "list"][..],
            &["dlq", "show", "msg_x"],
            &["endpoint", "show", "shop"],
            &["endpoint", "list"],
        ] {
            let mut all = args.to_vec();
            all.extend_from_slice(&["--store", &store, "--namespace", &ns]);
            let out = hookgate(&all);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?}: {}",
                text(&out.stderr)
            );
            assert!(
                text(&out.stderr).contains(&ns),
                "{args:?} names the namespace: {}",
                text(&out.stderr)
            );
        }
        let (client, conn) = tokio_postgres::connect(&store, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
                &[&ns],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, i64>(0),
            0,
            "a read-only command created schema {ns}"
        );
    }
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

fn metric(scrape: &str, name: &str, labels: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[test]
fn worker_metrics_count_its_traffic_and_ready_follows_its_redis() {
    let port = free_port();
    let Some(mut redis) = PrivateRedis::start(port) else {
        return;
    };
    let store = format!("redis://127.0.0.1:{}", redis.port);
    let (serve, serve_err) = Proc::spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--scheme",
        "standard",
        "--secret",
        SECRET,
    ]);
    let [addr] = addresses_after(&serve_err, ["listening on http://"]);
    let ok = hookgate(&[
        "endpoint",
        "add",
        "shop",
        "--url",
        &format!("http://{addr}/h"),
        "--allow-http",
        "--scheme",
        "standard",
        "--secret",
        SECRET,
        "--store",
        &store,
    ]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    for n in 0..3 {
        let out = hookgate(&[
            "enqueue",
            "shop",
            "--data",
            "{}",
            "--id",
            &format!("msg_{n}"),
            "--store",
            &store,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let (mut worker, worker_err) = Proc::spawn(&[
        "worker",
        "--store",
        &store,
        "--allow-private",
        "--allow-http",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let [admin] = addresses_after(&worker_err, ["admin on http://"]);
    for _ in 0..3 {
        serve
            .stdout
            .recv_timeout(Duration::from_secs(30))
            .expect("delivered");
    }
    // Exactly the traffic it did: three attempts, three deliveries.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, scrape) = get(admin, "/metrics");
        assert_eq!(status, 200);
        let delivered = metric(
            &scrape,
            "hookgate_sender_delivered_total",
            &["endpoint=\"shop\""],
        );
        if delivered == 3.0 {
            assert_eq!(
                metric(
                    &scrape,
                    "hookgate_sender_attempts_total",
                    &["outcome=\"delivered\""]
                ),
                3.0
            );
            assert_eq!(
                metric(
                    &scrape,
                    "hookgate_sender_attempts_total",
                    &["outcome=\"retry\""]
                ),
                0.0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "delivered_total {delivered}:\n{scrape}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(admin, "/health").0, 200);
    assert_eq!(get(admin, "/ready").0, 200);
    redis.stop();
    let (status, body) = get(admin, "/ready");
    assert_eq!(status, 503, "{body}");
    let mut redis = PrivateRedis::start(port).expect("restart");
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(admin, "/ready").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready 15 s after Redis came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(worker.term().success());
    redis.stop();
}

#[test]
fn a_replayed_dead_letter_is_delivered_by_a_running_worker() {
    for store in stores() {
        let ns = namespace();
        let base = ["--store", store.as_str(), "--namespace", ns.as_str()];
        let with = |args: &[&str]| {
            let mut all = args.to_vec();
            all.extend_from_slice(&base);
            hookgate(&all)
        };
        // Nothing listens at first: one attempt, dead-lettered.
        let closed = free_port();
        let add = |url: &str, extra: &[&str]| {
            let mut args = vec![
                "endpoint",
                "add",
                "shop",
                "--url",
                url,
                "--allow-http",
                "--scheme",
                "standard",
                "--secret",
                SECRET,
            ];
            args.extend_from_slice(extra);
            with(&args)
        };
        assert!(add(&format!("http://127.0.0.1:{closed}/h"), &[])
            .status
            .success());
        assert!(
            with(&["enqueue", "shop", "--data", "{\"n\":1}", "--id", "msg_dead"])
                .status
                .success()
        );
        let mut worker_args = vec![
            "worker",
            "--allow-private",
            "--allow-http",
            "--max-attempts",
            "1",
        ];
        worker_args.extend_from_slice(&base);
        let (mut worker, _err) = Proc::spawn(&worker_args);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !text(&with(&["dlq", "list", "--json"]).stdout).contains("msg_dead") {
            assert!(Instant::now() < deadline, "{store}: not dead-lettered");
            std::thread::sleep(Duration::from_millis(100));
        }
        // The receiver comes up; point the endpoint at it and replay into the queue.
        let (serve, serve_err) = Proc::spawn(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--scheme",
            "standard",
            "--secret",
            SECRET,
        ]);
        let [addr] = addresses_after(&serve_err, ["listening on http://"]);
        assert!(add(&format!("http://{addr}/h"), &["--update"])
            .status
            .success());
        // Workers cache an endpoint for 5 s: let the update reach this one.
        std::thread::sleep(Duration::from_millis(5_500));
        let replay = with(&["dlq", "replay", "--all", "--enqueue"]);
        assert!(replay.status.success(), "{}", text(&replay.stderr));
        let line = serve
            .stdout
            .recv_timeout(Duration::from_secs(30))
            .expect("the worker delivers the replayed message");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], "msg_dead");
        assert!(worker.term().success());
        drop(serve);
        futures_block_on(cli_support::cleanup(&store, &ns));
    }
}

fn futures_block_on(fut: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(fut);
}
