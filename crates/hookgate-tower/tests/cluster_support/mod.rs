//! A private Redis Cluster for tests: three `redis-server --cluster-enabled`
//! masters on free loopback ports, joined with `redis-cli --cluster create`.
//! Shared by the tower and CLI tests (`#[path]`).
#![allow(dead_code, unreachable_pub)]

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A Redis Cluster of three masters on free loopback ports, its nodes killed
/// and its directory removed on drop.
pub struct PrivateCluster {
    dir: std::path::PathBuf,
    children: Vec<Child>,
    /// The masters' ports.
    pub ports: Vec<u16>,
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    // A cluster node also listens on port + 10000 (the bus).
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl PrivateCluster {
    /// Start and join the cluster; `None` (with a note) without
    /// `redis-server`, except under `CI=true`, where that fails.
    pub fn start() -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "redis-server is missing under CI=true"
            );
            eprintln!("skipping: redis-server is not installed");
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("hookgate-cluster-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = Self {
            dir,
            children: Vec::new(),
            ports: Vec::new(),
        };
        for _ in 0..3 {
            let port = free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--cluster-config-file")
                .arg(cluster.dir.join(format!("nodes-{port}.conf")))
                .arg("--dir")
                .arg(&cluster.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            cluster.children.push(child);
            cluster.ports.push(port);
        }
        for port in &cluster.ports {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "node {port} did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ok = cluster.ports.iter().all(|p| {
                let out = Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "cluster", "info"])
                    .output()
                    .expect("redis-cli");
                String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok")
            });
            if ok {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "cluster did not form");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(cluster)
    }

    /// A `redis+cluster://` URL with two of the masters as seeds.
    pub fn url(&self) -> String {
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            self.ports[0], self.ports[1]
        )
    }

    /// `redis-cli -p port args..`, trimmed stdout.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}
