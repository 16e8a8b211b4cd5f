//! TLS to the stores against real servers the test starts on loopback, with
//! certificates the test generates: a private PostgreSQL (`initdb`, `ssl=on`)
//! and a private `redis-server --tls-port`. The right CA connects; a wrong
//! CA, a wrong host name and the system's roots are clear errors of class
//! `Misconfigured`.
//!
//! Needs `initdb`/`pg_ctl` (run as the `postgres` user when the test runs as
//! root) and a `redis-server` built with TLS. Without them the tests print
//! why and skip, except under `CI=true`, where they fail.
#![cfg(all(feature = "postgres", feature = "redis"))]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hookgate_backend::{
    postgres::{self as pg, PgUrl, PoolOptions},
    redis as hredis, ErrorClass,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

fn skip_or_fail(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "required under CI=true: {why}"
    );
    eprintln!("skipping: {why}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hookgate-{name}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A CA, a server certificate it signed for `names`, and an unrelated CA.
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki(dir: &Path, names: &[&str]) -> Pki {
    let ca = new_ca("hookgate test CA");
    let other = new_ca("some other CA");
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    let cert = params.signed_by(&key, &ca).unwrap();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.other_ca, other.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

/// Run a Postgres tool, as the `postgres` user when we are root (the server refuses root).
fn pg_tool(bin: &Path, args: &[&str]) -> std::io::Result<std::process::Output> {
    if is_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin)
            .args(args)
            .output()
    } else {
        Command::new(bin).args(args).output()
    }
}

fn pg_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    dir.join("initdb").exists().then_some(dir)
}

/// A private PostgreSQL with `ssl=on`, stopped and removed on drop.
struct PrivatePostgres {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    pki: Pki,
}

impl PrivatePostgres {
    fn start() -> Option<Self> {
        let Some(bindir) = pg_bindir() else {
            skip_or_fail("pg_config/initdb not found");
            return None;
        };
        let dir = temp_dir("pgtls");
        let pki = pki(&dir, &["db.hookgate.test", "127.0.0.1"]);
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success(), "chown the test directory to postgres");
        }
        let data = dir.join("data");
        let out = pg_tool(
            &bindir.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )
        .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{dir}'\nssl = on\n\
             ssl_cert_file = '{cert}'\nssl_key_file = '{key}'\nfsync = off\nmax_connections = 20\nshared_buffers = 16MB\n",
            dir = dir.display(),
            cert = pki.cert.display(),
            key = pki.key.display(),
        );
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).unwrap();
        text.push_str(&conf);
        std::fs::write(&conf_path, text).unwrap();
        std::fs::set_permissions(
            &pki.key,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        if is_root() {
            Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&dir)
                .status()
                .unwrap();
        }
        let log = dir.join("log");
        let out = pg_tool(
            &bindir.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        )
        .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Some(Self {
            bindir,
            dir,
            port,
            pki,
        })
    }

    fn url(&self, params: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres{params}",
            self.port
        )
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = pg_tool(
            &self.bindir.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the session with the pool is encrypted, or the error's class and description.
async fn pg_session_ssl(url: &str) -> Result<bool, (ErrorClass, String)> {
    let pool = PgUrl::parse(url)
        .unwrap()
        .pool(&PoolOptions {
            timeout: Duration::from_secs(5),
            ..PoolOptions::default()
        })
        .unwrap();
    let client = match pool.get().await {
        Ok(c) => c,
        Err(deadpool_postgres_error) => {
            let class = pg::classify_pool(&deadpool_postgres_error);
            let text = match &deadpool_postgres_error {
                deadpool_postgres::PoolError::Backend(e) => pg::describe(e),
                other => other.to_string(),
            };
            return Err((class, text));
        }
    };
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    Ok(row.get(0))
}

#[tokio::test]
async fn postgres_tls_modes_against_a_private_server() {
    let Some(server) = PrivatePostgres::start() else {
        return;
    };
    let ca = server.pki.ca.display().to_string();
    let other = server.pki.other_ca.display().to_string();

    // No sslmode: plain, as before.
    assert_eq!(pg_session_ssl(&server.url("")).await, Ok(false));
    // require: encrypted, certificate not checked (libpq's meaning).
    assert_eq!(
        pg_session_ssl(&server.url("?sslmode=require")).await,
        Ok(true)
    );
    // verify-full with the right CA: the certificate names 127.0.0.1.
    assert_eq!(
        pg_session_ssl(&server.url(&format!("?sslmode=verify-full&sslrootcert={ca}"))).await,
        Ok(true)
    );
    // key=value form, same settings.
    let kv = format!("host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert='{ca}'", server.port);
    assert_eq!(pg_session_ssl(&kv).await, Ok(true));

    // A wrong CA: a clear, typed error, with or without the host-name check.
    for mode in ["verify-full", "verify-ca", "require"] {
        let (class, text) =
            pg_session_ssl(&server.url(&format!("?sslmode={mode}&sslrootcert={other}")))
                .await
                .unwrap_err();
        assert_eq!(class, ErrorClass::Misconfigured, "{mode}: {text}");
        assert!(
            text.contains("not signed by a trusted root"),
            "{mode}: {text}"
        );
    }
    // The system's roots do not know the test CA.
    let (class, text) = pg_session_ssl(&server.url("?sslmode=verify-full"))
        .await
        .unwrap_err();
    assert_eq!(class, ErrorClass::Misconfigured, "{text}");
    assert!(text.contains("not signed by a trusted root"), "{text}");

    // A host name the certificate does not carry: verify-full refuses, verify-ca accepts.
    let wrong_name = |mode: &str| {
        format!(
            "host=wrong.hookgate.test hostaddr=127.0.0.1 port={} user=postgres dbname=postgres sslmode={mode} sslrootcert='{ca}'",
            server.port
        )
    };
    let (class, text) = pg_session_ssl(&wrong_name("verify-full"))
        .await
        .unwrap_err();
    assert_eq!(class, ErrorClass::Misconfigured, "{text}");
    assert!(text.contains("does not name the host"), "{text}");
    assert_eq!(pg_session_ssl(&wrong_name("verify-ca")).await, Ok(true));
}

#[tokio::test]
async fn postgres_errors_are_classified_by_a_real_server() {
    let url = std::env::var("HOOKGATE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let pool = PgUrl::parse(&url)
        .unwrap()
        .pool(&PoolOptions {
            statement_timeout: Some(Duration::from_millis(50)),
            ..PoolOptions::default()
        })
        .unwrap();
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return skip_or_fail(&format!("PostgreSQL at {url} unreachable: {e}")),
    };
    let missing = client
        .simple_query("SELECT * FROM hookgate_no_such_table_x")
        .await
        .unwrap_err();
    assert_eq!(
        pg::classify(&missing),
        ErrorClass::Misconfigured,
        "{}",
        pg::describe(&missing)
    );
    let timed_out = client.simple_query("SELECT pg_sleep(1)").await.unwrap_err();
    assert_eq!(
        pg::classify(&timed_out),
        ErrorClass::Unavailable,
        "{}",
        pg::describe(&timed_out)
    );
    // A closed port: nothing listens.
    let closed = PgUrl::parse(&format!(
        "postgres://postgres@127.0.0.1:{}/test",
        free_port()
    ))
    .unwrap()
    .pool(&PoolOptions::default())
    .unwrap();
    let e = closed.get().await.unwrap_err();
    assert_eq!(pg::classify_pool(&e), ErrorClass::Unavailable, "{e}");
}

/// A private `redis-server` answering TLS only, killed on drop.
struct PrivateRedis {
    child: Child,
    dir: PathBuf,
    port: u16,
    pki: Pki,
}

impl PrivateRedis {
    fn start() -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            skip_or_fail("redis-server not found");
            return None;
        }
        let dir = temp_dir("redistls");
        let pki = pki(&dir, &["cache.hookgate.test", "127.0.0.1"]);
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
            .arg("--tls-cert-file")
            .arg(&pki.cert)
            .arg("--tls-key-file")
            .arg(&pki.key)
            .arg("--tls-ca-cert-file")
            .arg(&pki.ca)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self {
            child,
            dir,
            port,
            pki,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server --tls-port did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn redis_ping(url: &str, ca: Option<&Path>) -> Result<String, (ErrorClass, String)> {
    let client = hredis::client(url, ca).map_err(|e| (ErrorClass::Misconfigured, e.to_string()))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| (hredis::classify(&e), hredis::describe(&e)))?;
    redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| (hredis::classify(&e), hredis::describe(&e)))
}

#[tokio::test]
async fn redis_tls_against_a_private_server() {
    let Some(server) = PrivateRedis::start() else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{}", server.port);
    assert_eq!(
        redis_ping(&url, Some(&server.pki.ca)).await,
        Ok("PONG".into())
    );

    let (class, text) = redis_ping(&url, Some(&server.pki.other_ca))
        .await
        .unwrap_err();
    assert_eq!(class, ErrorClass::Misconfigured, "{text}");
    assert!(text.contains("not signed by a trusted root"), "{text}");

    let (class, text) = redis_ping(&url, None).await.unwrap_err();
    assert_eq!(class, ErrorClass::Misconfigured, "{text}");

    // Turning the checks off in the URL is refused; a CA for plain redis:// too.
    assert!(hredis::client(&format!("{url}/#insecure"), None).is_err());
    assert!(hredis::client(
        &format!("redis://127.0.0.1:{}", server.port),
        Some(&server.pki.ca)
    )
    .is_err());
}
